"""`llm-router up`, `send`, `tail`, `stats`, `down` and Ctrl-C, as a user runs them.

Each test runs the real command in a subprocess against a broker that ``up`` itself starts
(free ports, a temporary data directory) and the test's own model servers (local tiers off:
the llama.cpp path is covered by ``tests/e2e``). What ``up`` started must be gone afterwards:
the recorded processes and the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from schemas.codec import decode
from schemas.messages import DeadLetter, RouteResponse
from tests.conftest import broker_settings
from workers.testing import Behaviour, ModelServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

CHAIN = ("fast", "balanced", "frontier")


def _ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' local ports (Linux; else IANA's)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except OSError:
        return range(49152, 65536)
    return range(int(low), int(high) + 1)


def _free_run(count: int) -> int:
    """A port p such that p..p+count-1 are all free (the router's and the workers' ports).

    The run lies outside the ephemeral range: a port found free there can be taken by any
    outgoing connection (the broker's, a client's) before the worker binds it (CI once saw
    ``address already in use`` on 37004).
    """
    ephemeral = _ephemeral_ports()
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - count)
        if any(base + i in ephemeral for i in range(count)):
            continue
        if all(_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free ports outside the ephemeral range")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan nobody reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Cli:
    """Runs ``python -m deploy --config <file> ...`` in a directory of the test's own."""

    def __init__(self, cwd: Path, config: Path) -> None:
        self.cwd = cwd
        self.config = config

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "deploy", "--config", str(self.config), *args]

    def run(self, *args: str, timeout_s: float = 240.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), cwd=self.cwd, capture_output=True, text=True, timeout=timeout_s,
            env=_env(),
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args), cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=_env(),
        )

    def recorded_pids(self) -> list[tuple[str, int]]:
        state = self.cwd / "var" / "stack" / "stack.json"
        return [(name, pid) for name, pid in json.loads(state.read_text())["pids"]]


def _env() -> dict[str, str]:
    # The config file says everything; stray LLM_ROUTER_* variables would override it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def cli(tmp_path: Path, model_servers: dict[str, ModelServer]) -> Iterator[Cli]:
    broker = broker_settings(tmp_path / "kafka")
    base = _free_run(1 + len(CHAIN))
    config: dict[str, Any] = {
        "broker": broker.model_dump(mode="json", include={
            "data_dir", "port", "controller_port", "heap_mb", "start_timeout_s",
        }),
        "kafka": {"bootstrap_servers": f"127.0.0.1:{broker.port}"},
        "topics": {"partitions": 2},
        "router": {"metrics_port": base, "web_port": 0, "data_dir": str(tmp_path / "router")},
        "tiers": {
            tier: {
                "base_url": server.url, "model": f"test-{tier}", "timeout_s": 5.0,
                "concurrency": 8,
            }
            for tier, server in model_servers.items()
        },
    }
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = Cli(tmp_path, path)
    yield runner
    runner.run("down", timeout_s=120)  # whatever a failed test left behind


def test_up_keep_then_send_tail_stats_down(cli: Cli) -> None:
    up = cli.run("up", "--no-local-models", "--per-category", "1", "--keep")
    assert up.returncode == 0, up.stdout + up.stderr
    # The summary: one row per tier, the baseline comparison.
    assert "stack left running" in up.stderr, up.stderr
    for tier in CHAIN:
        assert tier in up.stderr
    recorded = cli.recorded_pids()
    assert {name for name, _ in recorded} == {"router", *(f"worker-{t}" for t in CHAIN)}
    assert all(_alive(pid) for _, pid in recorded)

    sent = cli.run("send", "Say hi to the team.", "--tier", "balanced", "--timeout-s", "60")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sent.stdout.strip(), "no answer printed"
    assert "balanced" in sent.stderr and "forced" in sent.stderr, sent.stderr

    tail = cli.run("tail", "responses", "--from-beginning", "--limit", "3")
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert len(lines) == 3
    answers = [decode(RouteResponse, line.encode()) for line in lines]
    assert all(a.route.attempts[-1].outcome == "ok" for a in answers)

    # A broken message ends in the dead-letter topic, where `tail deadletter` shows it.
    config = yaml.safe_load(cli.config.read_text())

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=config["kafka"]["bootstrap_servers"])
        await producer.start()
        try:
            await producer.send_and_wait("llm.requests", b"{not json")
        finally:
            await producer.stop()

    asyncio.run(publish())
    dead = cli.run("tail", "deadletter", "--from-beginning", "--limit", "1", timeout_s=120)
    assert dead.returncode == 0, dead.stderr
    letter = decode(DeadLetter, dead.stdout.splitlines()[0].encode())
    assert letter.original == b"{not json" and letter.stage == "ingest"

    stats = cli.run("stats")
    assert stats.returncode == 0, stats.stderr
    # Everything the topics hold: the sample answers, the one sent above, the dead letter.
    assert "dead-lettered 1" in stats.stderr, stats.stderr

    down = cli.run("down")
    assert down.returncode == 0, down.stderr
    assert "broker" in down.stderr
    assert not any(_alive(pid) for _, pid in recorded)
    assert not _listening(config["broker"]["port"])
    assert not (cli.cwd / "var" / "stack" / "stack.json").exists()


def test_ctrl_c_during_up_stops_everything(
    cli: Cli, model_servers: dict[str, ModelServer]
) -> None:
    for server in model_servers.values():
        server.behaviour = Behaviour.slow(3.0)  # answers still pending when Ctrl-C comes
    up = cli.popen("up", "--no-local-models", "--per-category", "2")
    assert up.stdout is not None
    output: list[str] = []
    try:
        # Wait until the sample traffic is out (the live view starts after every component
        # is healthy and the requests are sent).
        deadline = time.monotonic() + 240
        while not any("worker-frontier: healthy" in line for line in output):
            assert time.monotonic() < deadline, "".join(output)
            line = up.stdout.readline()
            assert line or up.poll() is None, "".join(output)
            output.append(line)
        pids = cli.recorded_pids()
        assert all(_alive(pid) for _, pid in pids)
        time.sleep(2.0)
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=120)
        output.append(rest)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    text = "".join(output)
    assert "interrupted: stopping everything" in text, text
    assert "broker: stopped" in text, text
    assert not any(_alive(pid) for _, pid in pids), text
    config = yaml.safe_load(cli.config.read_text())
    assert not _listening(config["broker"]["port"])
    assert not (cli.cwd / "var" / "stack" / "stack.json").exists()
