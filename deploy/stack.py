"""The whole stack on one machine: broker, local model tiers, router and worker pools.

:class:`Stack` starts every component as its own process (each in its own session, so one
signal stops its whole tree), waits until each is healthy, and records what it started in
``run_dir/stack.json`` so that `llm-router down`, from another process, can stop it all.

Example::

    stack = Stack(settings, run_dir=Path("var/stack"), models_dir=Path("models"))
    with stack:            # start() ... stop()
        ...                # send traffic with streams.RouterClient
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml
from pydantic import SecretStr

from deploy.admin import create_all_topics
from deploy.broker import KafkaBroker
from deploy.models import LOCAL_MODELS, pull
from schemas.errors import RouterError
from schemas.settings import Settings

__all__ = [
    "LOCAL_PROFILE", "Component", "Stack", "StackError", "stop_recorded", "write_settings",
]

logger = logging.getLogger(__name__)

LOCAL_PROFILE = Path(__file__).parent / "profiles" / "local.yaml"

Progress = Callable[[str], None]


class StackError(RouterError):
    """A component did not start or did not become healthy; the message names it."""


@dataclass
class Component:
    """One process of the stack and how to tell it is ready."""

    name: str
    argv: list[str]
    health_url: str | None
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None


def _plain(value: Any) -> Any:
    # Settings as plain YAML-able data, secrets included: the children need them to work.
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_settings(settings: Settings, path: Path) -> Path:
    """Write the resolved settings for child processes (mode 0600: it may hold API keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(yaml.safe_dump(_plain(settings.model_dump()), sort_keys=False))
    return path


def _port(url: str) -> int:
    return httpx.URL(url).port or 80


def _terminate(pid: int, *, grace_s: float) -> None:
    # Each component leads its own process group: signal the group, then wait, then kill.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def stop_recorded(run_dir: Path, settings: Settings, *, grace_s: float = 15.0) -> list[str]:
    """Stop what a (possibly other) process recorded in ``run_dir/stack.json``."""
    state_file = run_dir / "stack.json"
    stopped: list[str] = []
    if state_file.exists():
        state = json.loads(state_file.read_text())
        # Reverse start order: workers and router first, model servers, then the broker.
        for name, pid in reversed(state.get("pids", [])):
            _terminate(pid, grace_s=grace_s)
            stopped.append(name)
        if state.get("broker_started"):
            KafkaBroker(settings.broker).stop()
            stopped.append("broker")
        state_file.unlink()
    return stopped


class Stack:
    """Starts and stops the embedded stack. ``start()``/``stop()``; ``stop()`` is idempotent."""

    def __init__(
        self,
        settings: Settings,
        *,
        run_dir: Path,
        models_dir: Path,
        local_models: bool = True,
        start_broker: bool = True,
        worker_ports: Mapping[str, int] | None = None,
        progress: Progress = lambda message: None,
    ) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.config_file = run_dir / "settings.yaml"
        self.models_dir = models_dir
        self.local_models = local_models
        self.start_broker = start_broker
        # Health/metrics port of each tier's worker; by default the ports after the router's.
        base = (settings.router.metrics_port or 9400) + 1
        self.worker_ports = dict(worker_ports or {
            tier: base + index for index, tier in enumerate(settings.chain)
        })
        self.progress = progress
        self.components: list[Component] = []
        self._broker_started = False

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- plan -------------------------------------------------------------------------------

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "deploy", "--config", str(self.config_file), *args]

    def plan(self) -> list[Component]:
        """The processes to start, in order (the broker is handled separately)."""
        components = []
        if self.local_models:
            by_model = {m.name: m for m in LOCAL_MODELS.values()}
            for tier in self.settings.chain:
                tier_settings = self.settings.tier(tier)
                model = by_model.get(tier_settings.model)
                if model is None:
                    continue  # an external endpoint: nothing to start
                port = _port(tier_settings.base_url)
                components.append(Component(
                    name=f"model-{tier}",
                    argv=[
                        sys.executable, "-m", "llama_cpp.server",
                        "--model", str(self.models_dir / model.filename),
                        "--model_alias", model.name,
                        "--host", "127.0.0.1", "--port", str(port),
                        "--n_threads", "1", "--n_threads_batch", "1",
                        "--n_ctx", "2048", "--verbose", "False",
                    ],
                    health_url=f"http://127.0.0.1:{port}/v1/models",
                ))
        router_port = self.settings.router.metrics_port
        components.append(Component(
            name="router",
            argv=self._cli("router"),
            health_url=f"http://127.0.0.1:{router_port}/metrics" if router_port else None,
            # Nothing supervises the stack's processes (`up --keep` leaves them running):
            # a stalled router restarts itself in place instead of exiting.
            env={"LLM_ROUTER_ROUTER__ON_STALL": "restart"},
        ))
        for tier in self.settings.chain:
            port = self.worker_ports[tier]
            components.append(Component(
                name=f"worker-{tier}",
                argv=self._cli("worker", "--tier", tier),
                health_url=f"http://127.0.0.1:{port}/healthz",
                env={"LLM_ROUTER_WORKERS__METRICS_PORT": str(port)},
            ))
        return components

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything and wait until healthy; on failure stop what started and raise."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stop_recorded(self.run_dir, self.settings)  # leftovers of an earlier run
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if self.start_broker:
            self.progress("broker: starting Apache Kafka (first run resolves jars with Maven)")
            broker = KafkaBroker(self.settings.broker)
            self._broker_started = broker.status()["running"] is False
            broker.start()
            self._record()
            self.progress(f"broker: ready at {broker.bootstrap_servers}")
        created = asyncio.run(create_all_topics(self.settings))
        self.progress(f"topics: {len(created)} created, the rest already there")
        if self.local_models:
            needed = [
                m for m in LOCAL_MODELS.values()
                if m.name in {self.settings.tier(t).model for t in self.settings.chain}
            ]
            pull(self.models_dir, [m.name for m in needed], progress=self.progress)
        self.components = self.plan()
        write_settings(self.settings, self.config_file)
        # The children read the resolved settings file; LLM_ROUTER_* variables would override
        # it field by field, so they are not passed on.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
        for component in self.components:
            component.log_path = self.run_dir / f"{component.name}.log"
            log = component.log_path.open("ab")
            component.process = subprocess.Popen(
                component.argv,
                env={**env, **component.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            log.close()
            self.progress(f"{component.name}: started (pid {component.process.pid})")
            self._record()
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = 300.0) -> None:
        """Poll every component's health URL until all answer 200."""
        pending = {c.name: c for c in self.components}
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for name, component in list(pending.items()):
                    assert component.process is not None
                    if component.process.poll() is not None:
                        raise StackError(
                            f"{name} exited with {component.process.returncode}; "
                            f"its log: {component.log_path}\n{self._tail(component)}"
                        )
                    if component.health_url is None:
                        del pending[name]
                        continue
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(component.health_url).status_code == 200:
                            del pending[name]
                            self.progress(f"{name}: healthy")
                if pending and time.monotonic() > deadline:
                    raise StackError(f"not healthy after {timeout_s:.0f} s: {sorted(pending)}")
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop workers, router, model servers, then the broker if this stack started it."""
        for component in reversed(self.components):
            process = component.process
            if process is not None and process.poll() is None:
                _terminate(process.pid, grace_s=self.settings.workers.shutdown_grace_s + 5)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
                self.progress(f"{component.name}: stopped")
        self.components = []
        if self._broker_started:
            KafkaBroker(self.settings.broker).stop()
            self._broker_started = False
            self.progress("broker: stopped")
        (self.run_dir / "stack.json").unlink(missing_ok=True)

    def component(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(name)

    def _record(self) -> None:
        state = {
            "pids": [[c.name, c.process.pid] for c in self.components if c.process is not None],
            "broker_started": self._broker_started,
        }
        (self.run_dir / "stack.json").write_text(json.dumps(state))

    @staticmethod
    def _tail(component: Component, lines: int = 20) -> str:
        if component.log_path is None or not component.log_path.exists():
            return ""
        return "\n".join(component.log_path.read_text(errors="replace").splitlines()[-lines:])
