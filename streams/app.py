"""The router process: a Faust app with its agents and tables, built by a factory.

Agents (all in consumer group ``router.app_id``, at-least-once):

* ``score``    ``llm.requests`` → batches of ``router.batch_max`` within
  ``router.batch_within_ms`` → :class:`~streams.scoring.ScoringStage` → ``llm.tier.<name>``
* ``uproute``  ``llm.uproute`` → :class:`~streams.uproute.UpRouteStage` → next tier topic,
  ``llm.responses`` (flagged) or ``llm.deadletter``; and its outcome, as ``outcomes`` does
* ``outcomes`` ``llm.responses`` → :class:`~streams.outcomes.OutcomeFeed` → the outcome of
  each answer, keyed by conversation id on ``{app_id}-conversation-outcomes`` and (first
  tier only) by user id on ``{app_id}-user-outcomes``
* ``conversation_outcomes`` ``{app_id}-conversation-outcomes`` → the conversation latch
* ``user_outcomes``  ``{app_id}-user-outcomes`` → per-user first-tier counters

Tables (changelog-backed; ``router.store``: ``memory://`` or ``rocksdb://``):

* ``conversations`` (conversation id → turns, highest tier, last seen): a
  :class:`~streams.tables.KeyedTable`, each record in the changelog partition the default
  Kafka partitioner picks for its key. Requests (keyed by conversation id, the contract of
  ``llm.requests``), conversation outcomes and the changelog all have ``topics.partitions``
  partitions, so Faust assigns partition *p* of the three to one replica: the replica that
  routes a conversation is the only one that writes its record, and reads it exactly.
* ``users`` (user id → first-tier outcomes): a :class:`~streams.tables.KeyedGlobalTable`.
  A user's conversations span partitions, so every replica holds the whole table and keeps
  reading its changelog; only the replica that owns the user's partition of
  ``{app_id}-user-outcomes`` writes it.

With several replicas the state a request is routed with is exact up to propagation: an
answer reaches the latch after one more hop through Kafka (the outcome topic), and a user's
counters reach the other replicas after two (the outcome topic, then the changelog), each a
produce and a fetch (50-100 ms in ``tests/streams/test_router_replicas.py`` on a local broker;
more by the consumer lag of those topics under load).

Example::

    settings = Settings.load("router.yaml")
    async with build_app(settings) as router:   # loads the ONNX classifier
        await router.wait_ready(timeout_s=60)
        ...                                     # route until cancelled
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, NoReturn, cast

import faust
from faust.types import EventT

from schemas.settings import KafkaSettings, Settings
from streams.metrics import RouterMetrics
from streams.outcomes import Outcome, OutcomeFeed, OutcomeLedger, read_outcome
from streams.policy import RoutePolicy
from streams.scorer import ScorerProtocol, load_scorer
from streams.scoring import RouterState, ScoringStage
from streams.state import UserStats
from streams.tables import KeyedGlobalTable, KeyedTable
from streams.topics import Record, Sink, normalize_headers
from streams.uproute import UpRouteStage

__all__ = [
    "STALL_EXIT_CODE",
    "FaustSink",
    "RouterApp",
    "RouterStalled",
    "build_app",
    "exit_stalled",
    "record_of",
    "run_router",
    "run_router_process",
    "running",
]

logger = logging.getLogger(__name__)

_LAG_INTERVAL_S = 1.0
# Exit status of a router that stopped on a stalled partition (EX_TEMPFAIL: try again).
STALL_EXIT_CODE = 75


class RouterStalled(RuntimeError):
    """A partition had records waiting and its read position did not move in time."""


def record_of(event: EventT[Any]) -> Record:
    """The stage-facing view of a Faust event."""
    message = event.message
    # Faust's monitor stamps a message with its clock when the consumer hands it to the
    # streams, before it waits in an agent's batch: that moment, as epoch seconds.
    received = None
    if message.time_in is not None:
        received = time.time() - (event.app.monitor.time() - message.time_in)
    value = event.value
    if isinstance(value, str):
        value = value.encode()
    key = event.key
    if isinstance(key, str):
        key = key.encode()
    return Record(
        value=value if isinstance(value, bytes | None) else None,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=key if isinstance(key, bytes) else None,
        headers=normalize_headers(message.headers),
        timestamp=message.timestamp,
        received=received,
    )


class FaustSink:
    """Publishes raw bytes through the Faust app's producer."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._topics: dict[str, Any] = {}

    async def send(
        self, topic: str, *, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        target = self._topics.get(topic)
        if target is None:
            target = self._topics[topic] = self._app.topic(
                topic, key_serializer="raw", value_serializer="raw"
            )
        fut: Awaitable[Any] = await target.send(key=key, value=value, headers=list(headers))
        return fut


def _credentials(kafka: KafkaSettings) -> Any:
    if kafka.security_protocol == "PLAINTEXT":
        return None
    from deploy.admin import kafka_client_kwargs

    kwargs = kafka_client_kwargs(kafka)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(kwargs["ssl_context"])
    return faust.SASLCredentials(
        username=kwargs["sasl_plain_username"],
        password=kwargs["sasl_plain_password"],
        mechanism=kafka.sasl_mechanism,
        ssl_context=kwargs.get("ssl_context"),
    )


def _table_store(store: str) -> str:
    """``router.store``, with ``rocksdb://`` falling back to memory where no driver is installed."""
    if not store.startswith("rocksdb"):
        return store
    import importlib.util

    if any(importlib.util.find_spec(m) is not None for m in ("rocksdict", "rocksdb")):
        return store
    logger.warning("router.store=%s but neither rocksdict nor rocksdb is installed: "
                   "tables stay in memory (still recovered from their changelogs)", store)
    return "memory://"


def _faust_app(settings: Settings) -> faust.App:
    router = settings.router
    brokers = [f"kafka://{host.strip()}" for host in settings.kafka.bootstrap_servers.split(",")]
    return faust.App(
        router.app_id,
        broker=brokers,
        broker_client_id=settings.kafka.client_id,
        broker_credentials=_credentials(settings.kafka),
        store=_table_store(router.store),
        processing_guarantee="at_least_once",
        autodiscover=False,
        # web_port 0 turns Faust's web server (its health and stats pages) off.
        web_enabled=router.web_port > 0,
        web_port=router.web_port or 6066,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        producer_acks=-1,
        # A replacement router takes over a SIGKILLed one's partitions after this long.
        broker_session_timeout=router.session_timeout_s,
        broker_heartbeat_interval=router.heartbeat_interval_s,
        datadir=str(router.data_dir / "{conf.name}-data"),
    )


class RouterApp:
    """The router process: the Faust app, its agents and tables, the classifier, metrics.

    Build it with :func:`build_app`; ``start()``/``stop()`` or ``async with``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        app: faust.App,
        scorer: ScorerProtocol,
        metrics: RouterMetrics,
        sink: Sink | None = None,
    ) -> None:
        self.settings = settings
        self.app = app
        self.scorer = scorer
        self.metrics = metrics
        self.policy = RoutePolicy.from_settings(settings)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router-score")
        self._sink: Sink = sink if sink is not None else FaustSink(app)
        self._lag_task: asyncio.Task[None] | None = None
        self._started = False
        # Set by the watchdog when a partition stalls; run_router then exits.
        self.stalled = asyncio.Event()
        self.stall_reason = ""
        # Per partition: ((read position, committed offset), when either last moved or the
        # partition last had nothing waiting), monotonic seconds.
        self._progress: dict[Any, tuple[tuple[int | None, int | None], float]] = {}
        # Per partition with read but uncommitted records: (committed offset, since when).
        self._commits: dict[Any, tuple[int, float]] = {}

        router = settings.router
        topics = settings.topics
        conversation_outcomes = router.outcome_topic("conversation")
        user_outcomes = router.outcome_topic("user")
        # The topics the agents read (the watchdog's and the gap guard's concern).
        self._sources = frozenset({
            topics.requests, topics.uproute, topics.responses, conversation_outcomes,
            user_outcomes,
        })
        partitions = topics.partitions
        # Raw keys hash like the producers' keys, so the default partitioner puts a record in
        # the changelog partition numbered like the requests of its conversation.
        table_schema: faust.Schema[str, Any] = faust.Schema(
            key_type=str, key_serializer="raw", value_serializer="json"
        )
        # KeyedTable places records itself (see streams.tables); use_partitioner still tells
        # Faust's stores that a key may live in any partition.
        self.conversations = KeyedTable(
            app, name="conversations", schema=table_schema, partitions=partitions,
            use_partitioner=True, beacon=app.tables.beacon,
            help="conversation id -> turns, highest tier index, last seen (epoch s)",
        )
        # Every replica reads users; the writer of a user reads its own records back, and a
        # count only grows (see KeyedGlobalTable).
        self.users = KeyedGlobalTable(
            app, name="users", schema=table_schema, partitions=partitions,
            version=lambda value: UserStats.from_json(value).outcomes, beacon=app.tables.beacon,
            help="user id -> outcomes and up-routes on the first tier",
        )
        app.tables.add(self.conversations)
        app.tables.add(self.users)
        self.state = RouterState(conversations=self.conversations, users=self.users)
        self.scoring = ScoringStage(
            settings, scorer=scorer, state=self.state, sink=self._sink, metrics=metrics,
            executor=self._executor,
        )
        self.feed = OutcomeFeed(settings, self.policy, self._sink)
        self.ledger = OutcomeLedger(self.policy, self.state)
        self.uproute = UpRouteStage(
            settings, policy=self.policy, feed=self.feed, sink=self._sink, metrics=metrics
        )

        def raw_topic(name: str, **options: Any) -> faust.TopicT:
            return app.topic(
                name, key_serializer="raw", value_serializer="raw", allow_empty=True, **options
            )

        def outcome_topic(name: str) -> faust.TopicT:
            # Internal: Faust creates it (like a changelog) where `topics create` did not.
            return raw_topic(
                name, internal=True, partitions=partitions,
                config={"retention.ms": str(topics.retention_ms)},
            )

        within_s = max(router.batch_within_ms, 1) / 1000.0
        batch_max = router.batch_max
        scoring, uproute, feed, ledger = self.scoring, self.uproute, self.feed, self.ledger

        async def score(stream: faust.StreamT[Any]) -> None:
            # take_events is on faust.Stream only (not on the StreamT interface).
            batches = cast(faust.Stream[Any], stream).take_events(batch_max, within=within_s)
            async for events in batches:
                await scoring.process([record_of(e) for e in events])

        async def route_up(stream: faust.StreamT[Any]) -> None:
            batches = cast(faust.Stream[Any], stream).take_events(batch_max, within=within_s)
            async for events in batches:
                pending = [await uproute.process(record_of(e)) for e in events]
                await asyncio.gather(*pending)

        async def outcomes(stream: faust.StreamT[Any]) -> None:
            batches = cast(faust.Stream[Any], stream).take_events(batch_max, within=within_s)
            async for events in batches:
                pending = [d for e in events for d in await feed.record_response(record_of(e))]
                await asyncio.gather(*pending)

        def applying(apply: Callable[[Outcome], None]) -> Callable[[Any], Awaitable[None]]:
            """An agent that applies each outcome of its topic with ``apply``."""

            async def agent(stream: faust.StreamT[Any]) -> None:
                async for event in stream.events():
                    outcome = read_outcome(record_of(event))
                    if outcome is not None:
                        apply(outcome)

            return agent

        self.score_agent = app.agent(raw_topic(topics.requests), name="score")(score)
        self.uproute_agent = app.agent(raw_topic(topics.uproute), name="uproute")(route_up)
        self.outcomes_agent = app.agent(raw_topic(topics.responses), name="outcomes")(outcomes)
        self.conversation_outcomes_agent = app.agent(
            outcome_topic(conversation_outcomes), name="conversation_outcomes"
        )(applying(ledger.latch))
        self.user_outcomes_agent = app.agent(
            outcome_topic(user_outcomes), name="user_outcomes"
        )(applying(ledger.count))

    async def start(self) -> None:
        """Serve metrics and start the Faust app (consumers, producer, table recovery)."""
        if self._started:
            return
        self._started = True
        # Faust makes its own data directory but not the parents of it.
        self.settings.router.data_dir.mkdir(parents=True, exist_ok=True)
        self.metrics.start(self.settings.router.metrics_port)
        self._guard_gaps()
        await self.app.start()
        self._lag_task = asyncio.create_task(self._report_lag(), name="router-lag")
        logger.info(
            "router %s started: %s -> %s",
            self.settings.router.app_id, self.settings.topics.requests,
            ", ".join(self.settings.topics.tier(t) for t in self.settings.chain),
        )

    async def stop(self) -> None:
        """Stop consuming, flush, stop metrics (safe to call twice)."""
        if not self._started:
            return
        self._started = False
        task, self._lag_task = self._lag_task, None
        try:
            if task is not None:
                task.cancel()
                # gather(return_exceptions) absorbs the task's own cancellation while a
                # cancellation of stop() itself still propagates.
                await asyncio.gather(task, return_exceptions=True)
            await self.app.stop()
        finally:
            self._executor.shutdown(wait=True)
            self.metrics.stop()
        logger.info("router %s stopped", self.settings.router.app_id)

    async def __aenter__(self) -> RouterApp:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def ready(self) -> bool:
        """Partitions assigned, tables recovered, not rebalancing."""
        app = self.app
        try:
            assigned = bool(app.consumer.assignment())
        except Exception:  # the consumer is not connected yet
            return False
        recovery = getattr(app.tables, "recovery", None)
        return assigned and not app.rebalancing and bool(recovery and recovery.completed.is_set())

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until :attr:`ready`; TimeoutError after ``timeout_s``."""

        async def poll() -> None:
            # Faust signals readiness through several flags and no single event: poll them.
            while not self.ready:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poll(), timeout_s)

    async def _report_lag(self) -> None:
        gauge = self.metrics.consumer_lag
        sources = self._sources
        while True:
            await asyncio.sleep(_LAG_INTERVAL_S)
            try:
                consumer = self.app.consumer
                read: dict[Any, int | None] = getattr(consumer, "_read_offset", {})
                assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
                # End offsets asked of the broker: the highwater a fetch leaves behind is
                # missing or stale exactly when a partition is not being fetched.
                ends = await asyncio.wait_for(consumer.highwaters(*assigned), 10)
                lags: dict[Any, int] = {}
                for tp in assigned:
                    end = ends.get(tp)
                    if end is None:
                        continue
                    position = read.get(tp)
                    lag = max(end - (position + 1 if position is not None else 0), 0)
                    lags[tp] = lag
                    gauge.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
            except Exception:  # lag is best effort: never let it take the router down
                logger.debug("consumer lag not available", exc_info=True)
                continue
            self._watch(lags, read, time.monotonic())

    def _watch(self, lags: dict[Any, int], read: dict[Any, int | None], now: float) -> None:
        """The stall watchdog (``router.stall_timeout_s``): see :data:`STALL_EXIT_CODE`."""
        limit = self.settings.router.stall_timeout_s
        if limit <= 0 or self.stalled.is_set():
            return
        sources = self._sources
        if self.app.rebalancing or not self.ready:
            # Positions legitimately stand still while partitions move or tables recover.
            self._progress.clear()
            self._commits.clear()
            return
        committed_offsets: dict[Any, int | None] = getattr(
            self.app.consumer, "_committed_offset", {}
        )
        for tp, lag in lags.items():
            if tp.topic not in sources:
                continue
            position = read.get(tp)
            committed = committed_offsets.get(tp)
            # Progress is reading or committing: a busy router stops fetching a partition
            # whose stream buffer is full (Faust's flow control) and reads on once the agent
            # has worked through it, committing as it goes.
            last = self._progress.get(tp)
            if lag == 0 or last is None or last[0] != (position, committed):
                self._progress[tp] = ((position, committed), now)
            elif now - last[1] > limit:
                self.fail(
                    f"{tp.topic}[{tp.partition}]: {lag} record(s) waiting, read position "
                    f"{position} and commit {committed} unchanged for {now - last[1]:.0f} s",
                    tp,
                )
                return
            # Records read but never acknowledged hold the commit back for good (Faust drops
            # an event whose delivery a rebalance interrupted): the commit must move too.
            # A fresh group has committed nothing (None): its first commit gets the same
            # time (the e2e router once hung in its very first commit).
            done = -1 if committed is None else committed
            held = self._commits.get(tp)
            if position is None or position <= done:
                self._commits.pop(tp, None)
            elif held is None or held[0] != done:
                self._commits[tp] = (done, now)
            elif now - held[1] > limit:
                stood = "nothing was ever committed" if committed is None else (
                    f"the commit has stood at {committed}"
                )
                self.fail(
                    f"{tp.topic}[{tp.partition}]: read up to {position} but {stood} "
                    f"for {now - held[1]:.0f} s",
                    tp,
                )
                return

    def fail(self, reason: str, tp: Any = None) -> None:
        """Stop routing: log ``reason`` and let :func:`run_router` exit to be restarted."""
        if self.stalled.is_set():
            return
        self.stall_reason = f"{reason}; {self._consumer_state(tp)}" if tp is not None else reason
        logger.error("router stalled, exiting to be restarted: %s", self.stall_reason)
        self.metrics.stalls.inc()
        self.stalled.set()

    def _guard_gaps(self) -> None:
        """Faust treats a jump in offsets as a gap to skip and commits past it; the router's
        topics are neither compacted nor transactional, so a jump means records the fetcher
        skipped (a race of its rebalance handling). Refuse to commit past them: stop, and
        let the restart read them again from the committed offset."""
        consumer: Any = self.app.consumer
        original = consumer._add_gap
        sources = self._sources

        async def add_gap(tp: Any, offset_from: int, offset_to: int) -> None:
            if tp.topic not in sources:
                await original(tp, offset_from, offset_to)
                return
            self.fail(
                f"{tp.topic}[{tp.partition}]: the fetcher skipped offsets {offset_from}.."
                f"{offset_to - 1}", tp
            )

        consumer._add_gap = add_gap

    def _consumer_state(self, tp: Any) -> str:
        """What Faust's consumer says about ``tp`` (for the stall report)."""
        consumer: Any = self.app.consumer
        facts = []
        for name in ("_paused_partitions", "_buffered_partitions", "_active_partitions"):
            members = getattr(consumer, name, None)
            if members is not None:
                facts.append(f"{name.strip('_')}={tp in members}")
        for name in ("flow_active", "can_resume_flow"):
            value: Any = getattr(consumer, name, None)
            facts.append(f"{name}={value.is_set() if hasattr(value, 'is_set') else value}")
        committed = getattr(consumer, "_committed_offset", {}).get(tp)
        facts.append(f"committed={committed}")
        return ", ".join(facts)


def build_app(
    settings: Settings,
    *,
    scorer: ScorerProtocol | None = None,
    sink: Sink | None = None,
) -> RouterApp:
    """The router for ``settings``; ``scorer`` defaults to the shipped ONNX classifier.

    ``sink`` replaces the Kafka producer (for agent tests with ``test_context()``).
    """
    if scorer is None:
        scorer = load_scorer(settings.classifier)
    return RouterApp(
        settings, app=_faust_app(settings), scorer=scorer, metrics=RouterMetrics(), sink=sink
    )


async def run_router(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the router until ``stop`` is set or SIGTERM/SIGINT arrives.

    Raises :class:`RouterStalled` when the watchdog finds a stalled partition; the command
    line entry points then exit with :data:`STALL_EXIT_CODE`.
    """
    import signal

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    started = time.monotonic()
    try:
        async with build_app(settings) as router:
            logger.info("metrics on port %s", router.metrics.port)
            stopping = asyncio.ensure_future(stop.wait())
            stalling = asyncio.ensure_future(router.stalled.wait())
            try:
                await asyncio.wait({stopping, stalling}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                stalling.cancel()
            if router.stalled.is_set():
                # Nothing was committed past what was published: a restart resumes from the
                # committed offsets (at-least-once). A stuck stop must not keep us alive.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(router.stop(), 15)
                raise RouterStalled(router.stall_reason)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        logger.info("router ran %.1f s", time.monotonic() - started)


def run_router_process(settings: Settings) -> None:
    """The router's process entry point: :func:`run_router` until it stops; a stall leaves
    the process as ``router.on_stall`` says (see :func:`exit_stalled`)."""
    try:
        asyncio.run(run_router(settings))
    except RouterStalled as exc:
        exit_stalled(exc, restart=settings.router.on_stall == "restart")


def exit_stalled(exc: RouterStalled, *, restart: bool = False) -> NoReturn:
    """Leave the process now with :data:`STALL_EXIT_CODE` (threads of a stuck Faust app
    must not keep it alive); its supervisor restarts it.

    ``restart=True`` (``router.on_stall: restart``) is for a router nobody supervises: the
    process executes its own command line again, in place (same pid, same log), and the new
    router resumes from the committed offsets."""
    if restart:
        logger.error("restarting in place: %s", exc)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    logger.error("exiting with %d: %s", STALL_EXIT_CODE, exc)
    logging.shutdown()
    os._exit(STALL_EXIT_CODE)


@contextlib.asynccontextmanager
async def running(router: RouterApp, *, ready_timeout_s: float = 60.0) -> AsyncIterator[RouterApp]:
    """Start ``router``, wait until it is ready, stop it on exit."""
    await router.start()
    try:
        await router.wait_ready(ready_timeout_s)
        yield router
    finally:
        await router.stop()
