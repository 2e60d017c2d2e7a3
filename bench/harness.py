"""Fault and load harness: run the real stack, drive load, inject faults, count outcomes.

Shared by the bounded CI scenarios (``tests/reliability/``) and the long benchmark
(``bench/bench_faults.py``). Every component is the real one: the router (``python -m deploy
router``) and the tier workers (``python -m deploy worker --tier NAME``) run as child processes
against a real Kafka broker, each tier's model is a :class:`workers.testing.ModelServer`, and
the load comes through :class:`streams.client.RouterClient`.

At the end of a scenario the responses and dead-letter topics are read from the beginning and
every request id the client sent is accounted for::

    lost = sent - answered - dead_lettered          (must be 0)

Example::

    async with Stack(settings, run_dir=tmp_path, workers={"fast": 2}) as stack:
        scenario = Scenario(
            name="worker-kill", rate=20, duration_s=30,
            faults=[Fault.every(4.0, kill_worker("fast"))],
        )
        report = await scenario.run(stack)
    print(report.table())
    assert report.lost == 0 and report.delivered_duplicates == 0

A :class:`Fault` is an async callable ``action(stack) -> str`` (what it did) run at ``at_s``
seconds into the load phase, optionally repeated ``every_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.admin import kafka_client_kwargs  # noqa: E402
from deploy.stack import write_settings  # noqa: E402
from deploy.summary import percentile  # noqa: E402
from schemas.codec import decode  # noqa: E402
from schemas.errors import SchemaError  # noqa: E402
from schemas.messages import ChatMessage, DeadLetter, RouteRequest, RouteResponse  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from streams.app import STALL_EXIT_CODE  # noqa: E402
from streams.client import RequestDeadLettered, RequestTimedOut, RouterClient  # noqa: E402

__all__ = [
    "Child",
    "Fault",
    "LagSampler",
    "Scenario",
    "ScenarioReport",
    "Stack",
    "TopicRecord",
    "account",
    "group_lag",
    "kill_router",
    "kill_worker",
    "make_request",
    "partitions_of",
    "percentile",
    "read_topic",
    "rebalance_storm",
    "render_table",
    "restart_broker",
    "stack_groups",
    "tier_overrides",
]

logger = logging.getLogger(__name__)

SAMPLES = ROOT / "classifier_onnx" / "model" / "sample_prompts.jsonl"
# Stop a child with SIGTERM, then SIGKILL after this long.
_TERM_GRACE_S = 15.0


def _load_prompts() -> list[list[dict[str, str]]]:
    prompts = []
    with contextlib.suppress(OSError):
        for line in SAMPLES.read_text().splitlines():
            if line.strip():
                prompts.append(json.loads(line)["messages"])
    return prompts or [[{"role": "user", "content": "What are your store hours?"}]]


_PROMPTS: list[list[dict[str, str]]] = []


def make_request(rng: random.Random | None = None, **fields: Any) -> RouteRequest:
    """A valid request with a sample prompt, a fresh id and its own conversation."""
    if not _PROMPTS:
        _PROMPTS.extend(_load_prompts())
    rng = rng or random.Random()
    messages = [ChatMessage(role=m["role"], content=m["content"]) for m in rng.choice(_PROMPTS)]
    values: dict[str, Any] = {
        "user_id": f"u-{rng.randrange(50)}",
        "conversation_id": f"c-{uuid.uuid4().hex[:12]}",
        "messages": messages,
    }
    values.update(fields)
    return RouteRequest(**values)


def tier_overrides(servers: Mapping[str, Any], **fields: Any) -> dict[str, dict[str, Any]]:
    """``Settings(tiers=...)`` values pointing each tier at its ModelServer (``.url``)."""
    tiers: dict[str, dict[str, Any]] = {}
    for tier, server in servers.items():
        tiers[tier] = {"base_url": server.url, "model": f"{tier}-model", **fields}
    return tiers


# --------------------------------------------------------------------------- processes


@dataclass
class Child:
    """One router or worker process of the stack."""

    role: str  # "router" or "worker"
    tier: str | None
    index: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)
    # Set before the harness stops or kills it on purpose: its exit is not a crash.
    expected_exit: bool = False

    @property
    def name(self) -> str:
        return self.role if self.tier is None else f"{self.role}-{self.tier}-{self.index}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        # Each child leads its own session: signal the whole group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would; reaps the process."""
        self.expected_exit = True
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def terminate(self, grace_s: float = _TERM_GRACE_S) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after ``grace_s``."""
        if not self.alive:
            return
        self.expected_exit = True
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()


class Stack:
    """The router and the worker pools as child processes, on one settings file.

    ``workers`` maps tier → number of worker processes. Children log to
    ``run_dir/<name>.log``; ``crashes`` counts children that exited without being asked
    (they are restarted by :meth:`supervise`, as a process manager would).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        run_dir: Path,
        workers: Mapping[str, int] | None = None,
        broker: Any = None,
        env: Mapping[str, str] | None = None,
        restart_crashed: bool = True,
    ) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.config_file = run_dir / "settings.yaml"
        self.worker_counts = dict(
            workers if workers is not None else {tier: 1 for tier in settings.chain}
        )
        # The KafkaBroker of this stack, for broker faults (None: not ours to stop).
        self.broker = broker
        self.extra_env = dict(env or {})
        self.restart_crashed = restart_crashed
        self.router: Child | None = None
        self.workers: dict[str, list[Child]] = defaultdict(list)
        self.retired: list[Child] = []
        self.crashes: Counter[str] = Counter()
        # Router exits of the stall watchdog (streams.app.STALL_EXIT_CODE), restarted too.
        self.watchdog_restarts = 0
        self._next_index: Counter[str] = Counter()
        self._supervisor: asyncio.Task[None] | None = None

    # -- processes --------------------------------------------------------------------------

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        # The children read the settings file; LLM_ROUTER_* variables would override it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def _spawn(self, role: str, tier: str | None, env: Mapping[str, str] | None = None) -> Child:
        key = role if tier is None else f"{role}-{tier}"
        index = self._next_index[key]
        self._next_index[key] += 1
        argv = [sys.executable, "-m", "deploy", "--config", str(self.config_file), role]
        if tier is not None:
            argv += ["--tier", tier]
        name = role if tier is None else f"{role}-{tier}-{index}"
        log_path = self.run_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                env=self._env(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Faust writes its <app_id>-data directory into the working directory.
                cwd=self.run_dir,
                start_new_session=True,
            )
        child = Child(role, tier, index, process, log_path)
        logger.info("started %s (pid %d)", child.name, process.pid)
        return child

    def start_router(self) -> Child:
        if self.router is not None and self.router.alive:
            raise RuntimeError("the router already runs")
        if self.router is not None:
            self.retired.append(self.router)
        self.router = self._spawn("router", None)
        return self.router

    def start_worker(self, tier: str, env: Mapping[str, str] | None = None) -> Child:
        child = self._spawn("worker", tier, env)
        self.workers[tier].append(child)
        return child

    def retire(self, child: Child) -> None:
        """Forget a child that was stopped on purpose (it is not a crash)."""
        if child.tier is not None and child in self.workers[child.tier]:
            self.workers[child.tier].remove(child)
        self.retired.append(child)

    def children(self) -> list[Child]:
        live = [w for ws in self.workers.values() for w in ws]
        return ([self.router] if self.router is not None else []) + live

    def all_children(self) -> list[Child]:
        return self.children() + self.retired

    def start(self) -> None:
        """Write the settings file and start the router and every worker."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_settings(self.settings, self.config_file)
        self.start_router()
        for tier, count in self.worker_counts.items():
            for _ in range(count):
                self.start_worker(tier)

    def stop(self) -> None:
        """SIGTERM every child (SIGKILL after a grace period); safe to call twice."""
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
        children = self.children()
        for child in children:
            child.expected_exit = True
            if child.alive:
                child.signal(signal.SIGTERM)
        deadline = time.monotonic() + _TERM_GRACE_S
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        for child in self.retired:
            if child.alive:
                child.kill()

    def kill_all(self) -> None:
        for child in self.all_children():
            if child.alive:
                child.kill()

    async def supervise(self, interval_s: float = 0.5) -> None:
        """Restart children that died on their own, counting each as a crash."""
        while True:
            await asyncio.sleep(interval_s)
            for child in self.children():
                if child.alive or child.expected_exit:
                    continue
                if child.role == "router" and child.process.returncode == STALL_EXIT_CODE:
                    self.watchdog_restarts += 1
                else:
                    self.crashes[child.name.rsplit("-", 1)[0] if child.tier else "router"] += 1
                logger.warning(
                    "%s exited on its own with %s; log tail:\n%s",
                    child.name, child.process.returncode, self.log_tail(child),
                )
                if not self.restart_crashed:
                    continue
                if child.role == "router":
                    self.start_router()
                else:
                    assert child.tier is not None
                    self.retire(child)
                    self.start_worker(child.tier)

    async def __aenter__(self) -> Stack:
        self.start()
        self._supervisor = asyncio.create_task(self.supervise(), name="stack-supervisor")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._supervisor
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.stop)

    @staticmethod
    def log_tail(child: Child, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = child.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def agent_crashes(self) -> list[str]:
        """Lines of the children's logs that say an agent or task crashed (Faust, asyncio)."""
        marks = ("Crashed reason=", "Task exception was never retrieved", "Traceback (most")
        found = []
        for name, text in self.logs().items():
            found += [f"{name}: {line}" for line in text.splitlines()
                      if any(mark in line for mark in marks[:2])]
        return found

    def logs(self) -> dict[str, str]:
        """Every child's whole log, by child name (retired ones included)."""
        out: dict[str, str] = {}
        for path in sorted(self.run_dir.glob("*.log")):
            out[path.stem] = path.read_text(errors="replace")
        return out


# --------------------------------------------------------------------------- faults


FaultAction = Callable[[Stack], Awaitable[str]]


@dataclass(frozen=True)
class Fault:
    """``action`` at ``at_s`` seconds into the load, then every ``every_s`` (if set)."""

    action: FaultAction
    at_s: float
    every_s: float | None = None
    times: int | None = None

    @classmethod
    def once(cls, at_s: float, action: FaultAction) -> Fault:
        return cls(action, at_s)

    @classmethod
    def every(cls, every_s: float, action: FaultAction, *, start_s: float | None = None,
              times: int | None = None) -> Fault:
        return cls(action, every_s if start_s is None else start_s, every_s, times)


def kill_worker(tier: str | None = None, *, replace: bool = True,
                rng: random.Random | None = None) -> FaultAction:
    """SIGKILL one worker (of ``tier`` or any), and start a replacement."""
    rng = rng or random.Random(1)

    async def action(stack: Stack) -> str:
        pools = [t for t in stack.workers if stack.workers[t] and (tier is None or t == tier)]
        if not pools:
            return "no worker to kill"
        victim_tier = rng.choice(sorted(pools))
        victim = rng.choice(stack.workers[victim_tier])
        victim.expected_exit = True
        await asyncio.to_thread(victim.kill)
        stack.retire(victim)
        if replace:
            stack.start_worker(victim_tier)
        return f"SIGKILL {victim.name}"

    return action


def kill_router(*, restart_after_s: float = 0.0) -> FaultAction:
    """SIGKILL the router, and start it again after ``restart_after_s``."""

    async def action(stack: Stack) -> str:
        router = stack.router
        if router is None:
            return "no router"
        router.expected_exit = True
        await asyncio.to_thread(router.kill)
        await asyncio.sleep(restart_after_s)
        stack.start_router()
        return f"SIGKILL router (pid {router.process.pid})"

    return action


def restart_broker(*, down_s: float = 5.0, kill: bool = False) -> FaultAction:
    """Stop the stack's own broker (SIGTERM, or SIGKILL), wait ``down_s``, start it again."""

    async def action(stack: Stack) -> str:
        broker = stack.broker
        if broker is None:
            raise RuntimeError("this stack has no broker of its own to restart")
        await asyncio.to_thread(broker.kill if kill else broker.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(broker.start)
        return f"broker {'killed' if kill else 'stopped'}, restarted after {down_s:.0f} s"

    return action


def rebalance_storm(tier: str, *, extra: int = 2, up_s: float = 3.0) -> FaultAction:
    """Start ``extra`` workers of ``tier``, let them join, stop them again (SIGTERM)."""

    async def action(stack: Stack) -> str:
        started = [stack.start_worker(tier) for _ in range(extra)]
        await asyncio.sleep(up_s)
        for child in started:
            child.expected_exit = True
            child.signal(signal.SIGTERM)
        await asyncio.to_thread(_reap, started)
        for child in started:
            stack.retire(child)
        return f"{extra} worker(s) of {tier} joined and left"

    return action


def _reap(children: Iterable[Child]) -> None:
    for child in children:
        try:
            child.process.wait(timeout=_TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()


# --------------------------------------------------------------------------- topics


async def partitions_of(
    consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 30.0
) -> list[int]:
    """The partition numbers of ``topic`` (waiting for its metadata); [] if it does not exist."""
    deadline = time.monotonic() + timeout_s
    while True:
        # What partitions_for_topic answers (synchronous in aiokafka 0.14, None until the
        # metadata has the topic), read from the cluster metadata directly.
        found = consumer._client.cluster.partitions_for_topic(topic)
        if found:
            return sorted(found)
        if time.monotonic() > deadline:
            return []
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class TopicRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


async def read_topic(
    settings: Settings, topics: Sequence[str], *, timeout_s: float = 60.0
) -> list[TopicRecord]:
    """Every record the topics hold now, from the beginning (no consumer group)."""
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings.kafka), group_id=None, enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )

    async def read() -> list[TopicRecord]:
        await consumer.start()
        partitions = [
            TopicPartition(topic, number)
            for topic in topics
            for number in await partitions_of(consumer, topic)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[TopicRecord] = []
        while any([await consumer.position(p) < ends[p] for p in partitions]):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out += [
                    TopicRecord(tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp)
                    for r in records
                    if r.offset < ends[tp]
                ]
        return out

    try:
        return await asyncio.wait_for(read(), timeout_s)
    finally:
        await consumer.stop()


@dataclass
class Accounting:
    """Final outcomes on the topics, per request id."""

    answered: set[str] = field(default_factory=set)
    dead_lettered: dict[str, DeadLetter] = field(default_factory=dict)
    # Extra final records for an id already finished (at-least-once redelivery).
    topic_duplicates: int = 0
    # Ids with both an answer and a dead letter: two different final outcomes.
    conflicts: set[str] = field(default_factory=set)
    # Dead letters that carry no request id (undecodable input), as read.
    anonymous_dead_letters: list[DeadLetter] = field(default_factory=list)
    responses: dict[str, RouteResponse] = field(default_factory=dict)


async def account(settings: Settings, *, timeout_s: float = 60.0) -> Accounting:
    """Read the responses and dead-letter topics from the beginning and sort them by id."""
    topics = settings.topics
    records = await read_topic(settings, [topics.responses, topics.deadletter],
                               timeout_s=timeout_s)
    result = Accounting()
    seen: Counter[str] = Counter()
    for record in records:
        try:
            if record.topic == topics.responses:
                response = decode(RouteResponse, record.value)
                rid = response.request_id
                result.answered.add(rid)
                result.responses.setdefault(rid, response)
            else:
                letter = decode(DeadLetter, record.value)
                if letter.request_id is None:
                    result.anonymous_dead_letters.append(letter)
                    continue
                rid = letter.request_id
                result.dead_lettered.setdefault(rid, letter)
        except SchemaError:
            logger.warning("unreadable record on %s[%d]@%d", record.topic, record.partition,
                           record.offset)
            continue
        seen[rid] += 1
    result.topic_duplicates = sum(n - 1 for n in seen.values() if n > 1)
    result.conflicts = result.answered & set(result.dead_lettered)
    return result


async def trace(settings: Settings, request_ids: Sequence[str]) -> dict[str, list[str]]:
    """Where each request id appears on the requests, tier and up-route topics, in order."""
    topics = settings.topics
    names = [topics.requests, *(topics.tier(t) for t in settings.chain), topics.uproute]
    wanted = set(request_ids)
    out: dict[str, list[str]] = {rid: [] for rid in request_ids}
    for record in sorted(await read_topic(settings, names), key=lambda r: r.timestamp_ms):
        try:
            raw = json.loads(record.value or b"")
            rid = raw.get("id") or raw.get("request", {}).get("id") or (
                raw.get("scored", {}).get("request", {}).get("id"))
        except (ValueError, AttributeError):
            continue
        if rid in wanted:
            out[rid].append(f"{record.topic}[{record.partition}]@{record.offset}")
    return out


# --------------------------------------------------------------------------- lag


async def group_lag(settings: Settings, groups: Sequence[str]) -> dict[str, int]:
    """Consumer lag (end offset - committed offset, summed over partitions) per group.

    A group that has committed nothing on a partition counts that partition's whole log.
    """
    kwargs = kafka_client_kwargs(settings.kafka)
    admin = AIOKafkaAdminClient(**kwargs)
    consumer = AIOKafkaConsumer(**kwargs, group_id=None, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        topics = settings.topics
        by_group_topics = _group_topics(settings)
        out: dict[str, int] = {}
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group)
            wanted = by_group_topics.get(group, [topics.requests])
            partitions = [
                TopicPartition(t, n) for t in wanted for n in await partitions_of(consumer, t)
            ]
            ends = await consumer.end_offsets(partitions)
            lag = 0
            for tp in partitions:
                meta = committed.get(tp)
                position = meta.offset if meta is not None and meta.offset >= 0 else 0
                lag += max(0, ends[tp] - position)
            out[group] = lag
        return out
    finally:
        await consumer.stop()
        await admin.close()


def _group_topics(settings: Settings) -> dict[str, list[str]]:
    topics = settings.topics
    app_id = settings.router.app_id
    groups = {app_id: [topics.requests, topics.uproute]}
    for tier in settings.chain:
        groups[f"{app_id}-{tier}"] = [topics.tier(tier)]
    return groups


def stack_groups(settings: Settings) -> list[str]:
    """The router's consumer group and every tier worker pool's."""
    return list(_group_topics(settings))


class LagSampler:
    """Samples :func:`group_lag` every ``interval_s`` into ``samples`` (t, {group: lag})."""

    def __init__(self, settings: Settings, *, interval_s: float = 2.0) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    async def start(self) -> None:
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="lag-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        groups = stack_groups(self.settings)
        while True:
            with contextlib.suppress(Exception):  # a broker outage: skip the sample
                lag = await asyncio.wait_for(group_lag(self.settings, groups), self.interval_s * 5)
                self.samples.append((time.monotonic() - self._t0, lag))
            await asyncio.sleep(self.interval_s)

    def max_lag(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for _, lag in self.samples:
            for group, value in lag.items():
                out[group] = max(out[group], value)
        return dict(out)


# --------------------------------------------------------------------------- scenario


@dataclass
class ScenarioReport:
    """What happened to every request of one scenario."""

    name: str
    sent: int = 0
    answered: int = 0
    dead_lettered: int = 0
    dead_letter_causes: Counter[str] = field(default_factory=Counter)
    lost_ids: list[str] = field(default_factory=list)
    # Where each lost request was last seen: "topic[partition]@offset" of the pipeline topics.
    lost_trace: dict[str, list[str]] = field(default_factory=dict)
    # The application got a second final result for one request id (must be 0).
    delivered_duplicates: int = 0
    # Redelivered final results the client SDK recognised and dropped.
    sdk_dropped: int = 0
    # Extra final records on the topics (at-least-once redelivery), and ids that have both an
    # answer and a dead letter there.
    topic_duplicates: int = 0
    conflicts: int = 0
    # Sends the broker never acknowledged (after retries): not sent, not counted as lost.
    send_failures: int = 0
    latencies_s: list[float] = field(default_factory=list)
    # (seconds into the load, what was done, recovery: seconds until answers flowed again
    # after the longest stall that followed it, seconds until every request sent before it
    # was finished).
    faults: list[tuple[float, str, float | None, float | None]] = field(default_factory=list)
    crashes: Counter[str] = field(default_factory=Counter)
    watchdog_restarts: int = 0
    # Log lines of agents (Faust actors) or tasks that crashed inside a live process.
    agent_crashes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    drain_s: float = 0.0
    max_lag: dict[str, int] = field(default_factory=dict)
    final_lag: dict[str, int] = field(default_factory=dict)
    # (seconds into the load, {group: lag}) when Scenario.sample_lag_s is set.
    lag_samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    # Requests with no result when the drain ended, and how long the groups then took to
    # reach lag 0 (None: not within Scenario.quiesce_timeout_s).
    unfinished_at_drain: int = 0
    quiesce_s: float | None = None

    @property
    def lost(self) -> int:
        return len(self.lost_ids)

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_s, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_s, 99) * 1000

    @property
    def recovery_s(self) -> float | None:
        """The longest recovery of any fault (see :func:`recovery_after`)."""
        values = [r for _, _, r, _ in self.faults if r is not None]
        return max(values) if values else None

    @property
    def backlog_clear_s(self) -> float | None:
        """The longest time from a fault until everything sent before it was finished."""
        values = [b for _, _, _, b in self.faults if b is not None]
        return max(values) if values else None

    def row(self) -> dict[str, str]:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        causes = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_letter_causes.items()))
        return {
            "scenario": self.name,
            "sent": str(self.sent),
            "answered": str(self.answered),
            "dead-lettered": f"{self.dead_lettered}" + (f" ({causes})" if causes else ""),
            "lost": str(self.lost),
            "dup (app)": str(self.delivered_duplicates),
            "dup (sdk dropped)": str(self.sdk_dropped),
            "dup (topics)": str(self.topic_duplicates),
            "conflicts": str(self.conflicts),
            "p50 ms": f"{self.p50_ms:.0f}",
            "p99 ms": f"{self.p99_ms:.0f}",
            "recovery s": seconds(self.recovery_s),
            "backlog clear s": seconds(self.backlog_clear_s),
            "crashes": str(sum(self.crashes.values())),
            "watchdog restarts": str(self.watchdog_restarts),
            "agent crashes": str(len(self.agent_crashes)),
            "send failures": str(self.send_failures),
            "late": str(self.unfinished_at_drain),
        }

    def table(self) -> str:
        """A plain-text table: one line per figure, then one per fault."""
        row = self.row()
        width = max(len(k) for k in row)
        lines = [f"== {self.name} ({self.duration_s:.0f} s load, {self.drain_s:.0f} s drain)"]
        lines += [f"  {k.ljust(width)}  {v}" for k, v in row.items() if k != "scenario"]
        for at, what, recovery, backlog in self.faults:
            r = "-" if recovery is None else f"{recovery:.1f}"
            b = "-" if backlog is None else f"{backlog:.1f}"
            lines.append(f"  fault @{at:6.1f}s  {what}  (recovery {r} s, backlog {b} s)")
        if self.max_lag:
            lines.append(f"  max lag  {self.max_lag}")
        if self.final_lag:
            lines.append(f"  final lag  {self.final_lag}")
        if self.crashes:
            lines.append(f"  crashes  {dict(self.crashes)}")
        if self.lost_ids:
            lines.append(f"  lost ids (first 10)  {self.lost_ids[:10]}")
            for rid in self.lost_ids[:10]:
                lines.append(f"    {rid}: {' '.join(self.lost_trace.get(rid, [])) or '-'}")
        for line in self.agent_crashes[:5]:
            lines.append(f"  agent crash  {line[:200]}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.row())
        data["faults"] = [list(f) for f in self.faults]
        data["max_lag"] = self.max_lag
        return data


def render_table(reports: Sequence[ScenarioReport]) -> str:
    """Several reports side by side, one row per scenario."""
    rows = [r.row() for r in reports]
    if not rows:
        return ""
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    lines = [" | ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("-+-".join("-" * widths[c] for c in columns))
    lines += [" | ".join(row[c].ljust(widths[c]) for c in columns) for row in rows]
    return "\n".join(lines)


RequestFactory = Callable[[random.Random], RouteRequest]


# Stalls of answers are looked for this long after a fault.
RECOVERY_WINDOW_S = 120.0


def recovery_after(
    finishes: Sequence[float], fault_time: float, stall_s: float = 1.0,
    next_fault_time: float | None = None,
) -> float | None:
    """Seconds from a fault until answers flowed again after the stall it caused.

    ``finishes`` are the (sorted) times answers arrived. The stall is the first gap longer
    than ``stall_s`` between consecutive answers (the fault counting as the first) that
    starts before the next fault (or within :data:`RECOVERY_WINDOW_S`); it may end later.
    A fault that stalled nothing recovers at its next answer. None: no answer came after it.
    """
    window = [t for t in finishes if fault_time < t <= fault_time + RECOVERY_WINDOW_S]
    if not window:
        return None
    search_end = fault_time + RECOVERY_WINDOW_S
    if next_fault_time is not None:
        search_end = min(search_end, next_fault_time)
    previous = fault_time
    for t in window:
        if previous >= search_end:
            break
        if t - previous > stall_s:
            return t - fault_time
        previous = t
    return window[0] - fault_time


@dataclass
class Scenario:
    """Load at ``rate`` requests/s for ``duration_s``, with ``faults`` on a schedule.

    ``drain_timeout_s`` bounds the wait for the last answers; ``answer_timeout_s`` bounds
    each request's wait. ``max_in_flight`` bounds requests sent but not yet finished.
    """

    name: str
    rate: float = 10.0
    duration_s: float = 30.0
    faults: list[Fault] = field(default_factory=list)
    drain_timeout_s: float = 120.0
    warmup_timeout_s: float = 120.0
    answer_timeout_s: float = 180.0
    send_timeout_s: float = 60.0
    max_in_flight: int = 2000
    seed: int = 7
    request_factory: RequestFactory | None = None
    sample_lag_s: float | None = None
    quiesce_timeout_s: float = 60.0

    async def _quiesce(self, settings: Settings) -> float | None:
        """Seconds until every consumer group's lag is 0; None if not within the bound."""
        started = time.monotonic()
        groups = stack_groups(settings)
        while time.monotonic() - started < self.quiesce_timeout_s:
            with contextlib.suppress(Exception):
                lag = await asyncio.wait_for(group_lag(settings, groups), 30)
                if not any(lag.values()):
                    return time.monotonic() - started
            await asyncio.sleep(1.0)
        return None

    async def warm_up(self, stack: Stack, client: RouterClient) -> float:
        """Send one request at a time until one is answered; return how long it took."""
        started = time.monotonic()
        deadline = started + self.warmup_timeout_s
        rng = random.Random(self.seed - 1)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{self.name}: the stack answered nothing within {self.warmup_timeout_s} s"
                )
            request = make_request(rng)
            try:
                await asyncio.wait_for(client.submit(request), min(left, 30))
                await client.result(request.id, timeout_s=min(left, 10))
                return time.monotonic() - started
            except (RequestTimedOut, RequestDeadLettered, TimeoutError):
                continue

    async def run(self, stack: Stack, client: RouterClient | None = None) -> ScenarioReport:
        """Warm up, drive the load with the faults, drain, then count from the topics."""
        settings = stack.settings
        own_client = client is None
        if client is None:
            client = RouterClient(settings)
        try:
            if own_client:
                await asyncio.wait_for(client.start(), 60)
            await self.warm_up(stack, client)
            return await self._run(stack, client)
        finally:
            if own_client:
                await client.stop()

    async def _run(self, stack: Stack, client: RouterClient) -> ScenarioReport:
        settings = stack.settings
        report = ScenarioReport(self.name)
        rng = random.Random(self.seed)
        factory = self.request_factory or (lambda r: make_request(r))
        # id -> (sent at, finished at or None); finish times drive the recovery figures.
        sent_at: dict[str, float] = {}
        finished_at: dict[str, float] = {}
        outcomes: Counter[str] = Counter()
        in_flight = asyncio.Semaphore(self.max_in_flight)
        waiters: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        baseline_dropped = client.duplicates
        sampler = None
        if self.sample_lag_s:
            sampler = LagSampler(settings, interval_s=self.sample_lag_s)
        if sampler is not None:
            await sampler.start()

        async def one(request: RouteRequest) -> None:
            async with in_flight:
                # Latency and recovery count from when the caller started to send.
                started = time.monotonic()
                for attempt in range(5):
                    try:
                        await asyncio.wait_for(client.submit(request), self.send_timeout_s)
                        break
                    except Exception as exc:  # counted, then retried
                        logger.warning("send of %s failed (try %d): %r", request.id, attempt, exc)
                        await asyncio.sleep(1.0)
                else:
                    report.send_failures += 1
                    return
                sent_at[request.id] = started
                try:
                    await client.result(request.id, timeout_s=self.answer_timeout_s)
                    kind = "answered"
                except RequestDeadLettered:
                    kind = "dead_lettered"
                except RequestTimedOut:
                    return
                if request.id in finished_at:
                    report.delivered_duplicates += 1
                    return
                finished_at[request.id] = time.monotonic()
                outcomes[kind] += 1
                if kind == "answered":
                    report.latencies_s.append(finished_at[request.id] - sent_at[request.id])

        fault_log: list[tuple[float, str]] = []

        async def run_fault(fault: Fault) -> None:
            count = 0
            await asyncio.sleep(fault.at_s)
            while time.monotonic() - t0 < self.duration_s:
                at = time.monotonic() - t0
                try:
                    what = await fault.action(stack)
                except Exception as exc:  # the scenario goes on; reported
                    logger.exception("fault failed")
                    what = f"fault failed: {exc!r}"
                fault_log.append((at, what))
                count += 1
                if fault.every_s is None or (fault.times is not None and count >= fault.times):
                    return
                await asyncio.sleep(max(0.0, fault.every_s - (time.monotonic() - t0 - at)))

        fault_tasks = [asyncio.create_task(run_fault(f)) for f in self.faults]
        try:
            total = int(self.rate * self.duration_s)
            for number in range(total):
                delay = t0 + number / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(factory(rng)))
                waiters.add(task)
                task.add_done_callback(waiters.discard)
            report.duration_s = time.monotonic() - t0
            await asyncio.gather(*fault_tasks)
            drain_started = time.monotonic()
            if waiters:
                await asyncio.wait(set(waiters), timeout=self.drain_timeout_s)
            report.drain_s = time.monotonic() - drain_started
        finally:
            for task in [*fault_tasks, *waiters]:
                task.cancel()
            await asyncio.gather(*fault_tasks, *waiters, return_exceptions=True)
            if sampler is not None:
                await sampler.stop()

        # Requests still unfinished may be late rather than lost: wait (bounded) until every
        # group has consumed everything, let late redeliveries land, then count.
        report.unfinished_at_drain = len(set(sent_at) - set(finished_at))
        if report.unfinished_at_drain:
            report.quiesce_s = await self._quiesce(settings)
        await asyncio.sleep(2.0)
        accounting = await account(settings)
        sent = set(sent_at)
        report.sent = len(sent)
        answered = sent & accounting.answered
        dead = (sent & set(accounting.dead_lettered)) - answered
        report.answered = len(answered)
        report.dead_lettered = len(dead)
        report.dead_letter_causes = Counter(
            f"{accounting.dead_lettered[i].stage}/{accounting.dead_lettered[i].error_kind}"
            for i in dead
        )
        report.lost_ids = sorted(sent - answered - dead)
        if report.lost_ids:
            try:
                report.lost_trace = await trace(settings, report.lost_ids)
            except Exception:  # a diagnosis only: the counts above stand without it
                logger.exception("could not trace the lost requests")
        report.topic_duplicates = accounting.topic_duplicates
        report.conflicts = len(accounting.conflicts & sent)
        report.sdk_dropped = client.duplicates - baseline_dropped
        report.crashes = Counter(stack.crashes)
        report.watchdog_restarts = stack.watchdog_restarts
        report.agent_crashes = stack.agent_crashes()
        if sampler is not None:
            report.max_lag = sampler.max_lag()
            report.lag_samples = list(sampler.samples)
        with contextlib.suppress(Exception):
            report.final_lag = await asyncio.wait_for(
                group_lag(settings, stack_groups(settings)), 30
            )

        finishes = sorted(finished_at.values())
        starts = sorted(t0 + at for at, _ in fault_log)
        for at, what in fault_log:
            fault_time = t0 + at
            later = [t for t in starts if t > fault_time]
            before = [i for i, s in sent_at.items() if s < fault_time]
            backlog: float | None = None
            if before and all(i in finished_at for i in before):
                backlog = max(0.0, max(finished_at[i] for i in before) - fault_time)
            # A stall: no answer for ten times the mean gap between requests (at least 1 s).
            stall_s = max(1.0, 10.0 / self.rate)
            recovery = recovery_after(
                finishes, fault_time, stall_s, later[0] if later else None
            )
            report.faults.append((at, what, recovery, backlog))
        return report


def metrics_text(port: int, timeout_s: float = 5.0) -> str:
    """The Prometheus text of ``http://127.0.0.1:<port>/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as reply:
        body: bytes = reply.read()
    return body.decode(errors="replace")
