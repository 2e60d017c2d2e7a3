"""The tier worker: consume a tier's topic, call its model, publish one outcome per request.

One :class:`TierWorker` per process and tier, in the consumer group ``<app_id>-<tier>``
(``llm-router-fast`` by default): ops scale a tier by starting more processes.

For every :class:`~schemas.messages.ScoredRequest` on ``llm.tier.<name>`` it publishes exactly
one outcome, and commits the request's offset only once that outcome, and the outcome of every
earlier message of the partition, is acknowledged by the broker (at-least-once, no gaps):

==========================================  ==================================================
the answer passes validation                :class:`RouteResponse` on ``llm.responses``
                                            (key = request id)
timeout, 429, 5xx, 4xx, malformed response, :class:`UpRouteEvent` on ``llm.uproute``
invalid answer                              (key = conversation id), on every tier
the deadline passed (before or during the   :class:`DeadLetter` ``deadline_exceeded`` on
call)                                       ``llm.deadletter``; never retried
the message does not decode                 :class:`DeadLetter` with the original bytes
==========================================  ==================================================

Up to ``concurrency`` requests are in flight at once on one event loop; at the limit the
worker pauses its partitions (backpressure) and resumes when a call finishes. On a rebalance
and on :meth:`TierWorker.stop` it stops fetching, lets in-flight calls finish for a grace
period, cancels the rest (they are redelivered, since their offsets are not committed),
commits what is done and leaves the group.

Example::

    async with TierWorker(settings, "fast", concurrency=1000) as worker:
        await worker.join()          # runs until stop() or a fatal error

or, with SIGTERM/SIGINT handling, as ``llm-router worker --tier fast`` does::

    asyncio.run(run_worker(settings, "fast"))
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from deploy.admin import kafka_client_kwargs
from deploy.producer import RecoveringProducer
from schemas.codec import decode, encode
from schemas.errors import InvalidOutput, SchemaError, UpstreamError, UpstreamRateLimited
from schemas.messages import (
    MAX_MESSAGE_CHARS,
    Attempt,
    AttemptOutcome,
    DeadLetter,
    RouteInfo,
    RouteResponse,
    ScoredRequest,
    UpRouteCause,
    UpRouteEvent,
    Usage,
    utcnow,
)
from schemas.settings import Settings, TierSettings
from workers.metrics import MetricsServer, WorkerMetrics
from workers.offsets import OffsetTracker, RecentIds
from workers.providers import Completion, Provider, make_provider, map_http_error
from workers.timeouts import call_timeout_s, httpx_timeout, remaining_s, tier_timeout_s
from workers.validation import validate_answer

__all__ = ["TierWorker", "group_id_of", "run_worker"]

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

# A call with less time than this before the deadline is not made: it could not succeed.
_MIN_CALL_S = 0.005
_POLL_TIMEOUT_MS = 100
# How long a rebalance waits for in-flight calls of revoked partitions before cancelling
# them; kept well inside the consumer's rebalance timeout below.
_REVOKE_GRACE_MAX_S = 10.0
_REBALANCE_TIMEOUT_MS = 30_000
_PUBLISH_RETRY_S = (0.1, 0.25, 0.5, 1.0, 2.0)
_DETAIL_CHARS = 2000
_DEADLETTER_ERROR_CHARS = 20_000


def group_id_of(settings: Settings, tier: str) -> str:
    """The consumer group of a tier's worker pool: ``<router.app_id>-<tier>``."""
    return f"{settings.router.app_id}-{tier}"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a message became: one record to publish, and its name for metrics."""

    result: str  # response | uproute | deadletter
    topic: str
    key: bytes | None
    value: bytes
    request_id: str | None
    # Set for answered requests: remembered once published, to skip redeliveries.
    dedup_key: str | None = None


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: TierWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._worker._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._worker._on_assigned(set(assigned))


class TierWorker:
    """Answers the requests of one tier's topic with that tier's model.

    ``concurrency`` (default: ``workers.max_pending`` or the tier's ``concurrency``) bounds
    the requests in flight in this process. ``provider`` replaces the one built from the
    tier's settings (it is started and stopped with the worker).

    Example::

        async with TierWorker(settings, "fast") as worker:
            print(worker.metrics_port, worker.in_flight)
            await worker.join()
    """

    def __init__(
        self,
        settings: Settings,
        tier: str,
        *,
        concurrency: int | None = None,
        worker_id: str | None = None,
        provider: Provider | None = None,
    ) -> None:
        self._settings = settings
        self._tier_name = tier
        self._tier: TierSettings = settings.tier(tier)
        self.concurrency = concurrency or settings.workers.max_pending or self._tier.concurrency
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        self.worker_id = worker_id or _default_worker_id()
        self.topic = settings.topics.tier(tier)
        self.group_id = group_id_of(settings, tier)
        self.metrics = WorkerMetrics(tier, self.worker_id)
        self._provider: Provider = provider or make_provider(
            self._tier, max_connections=self.concurrency
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: RecoveringProducer | None = None
        self._server: MetricsServer | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False

        self._assigned: set[TopicPartition] = set()
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._tasks: dict[TopicPartition, dict[int, asyncio.Task[None]]] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._capacity = asyncio.Event()
        self._recent = RecentIds(settings.workers.dedup_size)
        self._answering: set[str] = set()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.pauses = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def tier(self) -> str:
        return self._tier_name

    @property
    def metrics_port(self) -> int | None:
        """The bound port of ``/metrics`` and ``/healthz`` once started."""
        return None if self._server is None else self._server.port

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._assigned)

    @property
    def paused(self) -> frozenset[TopicPartition]:
        if self._consumer is None:
            return frozenset()
        return frozenset(self._consumer.paused())

    @property
    def consuming(self) -> bool:
        """True while the worker runs and fetches (what ``/healthz`` reports)."""
        task = self._run_task
        return self._started and not self._stopping and task is not None and not task.done()

    async def start(self) -> None:
        """Connect to Kafka and the model, join the group and start consuming."""
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        kafka = kafka_client_kwargs(self._settings.kafka)
        await self._provider.start()
        self._producer = RecoveringProducer(
            lambda: AIOKafkaProducer(**kafka, acks="all", enable_idempotence=True, linger_ms=5)
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            **kafka,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            rebalance_timeout_ms=_REBALANCE_TIMEOUT_MS,
        )
        self._consumer.subscribe([self.topic], listener=_RebalanceListener(self))
        await self._consumer.start()
        self._server = MetricsServer(
            self.metrics, self._health, port=self._settings.workers.metrics_port
        )
        await self._server.start()
        self._last_commit = time.monotonic()
        self._run_task = asyncio.create_task(self._run(), name=f"tier-worker-{self._tier_name}")
        logger.info(
            "worker %s of tier %s consuming %s in group %s (concurrency %d, model %s at %s)",
            self.worker_id,
            self._tier_name,
            self.topic,
            self.group_id,
            self.concurrency,
            self._tier.model,
            self._tier.base_url,
        )

    async def stop(self) -> None:
        """Stop fetching, finish or hand back in-flight work, commit, leave the group.

        Safe to call twice; concurrent callers wait for the same shutdown.
        """
        if not self._started:
            return
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._shutdown(), name="tier-worker-stop")
        await asyncio.shield(self._stop_task)

    async def _shutdown(self) -> None:
        self._stopping = True
        self._capacity.set()
        if self._run_task is not None:
            self._run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._run_task
        tasks = [t for by_offset in self._tasks.values() for t in by_offset.values()]
        if tasks:
            logger.info(
                "worker %s stopping: waiting up to %.1fs for %d in-flight call(s)",
                self.worker_id,
                self._settings.workers.shutdown_grace_s,
                len(tasks),
            )
            await self._drain(tasks, self._settings.workers.shutdown_grace_s)
        if self._consumer is not None:
            await self._commit()
            with contextlib.suppress(KafkaError):
                await self._consumer.stop()
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await self._producer.stop()
        await self._provider.stop()
        if self._server is not None:
            await self._server.stop()
        self.metrics.in_flight.set(0)
        logger.info("worker %s of tier %s stopped", self.worker_id, self._tier_name)

    async def join(self) -> None:
        """Wait until the consume loop ends; raise its error if it failed."""
        if self._run_task is None:
            raise RuntimeError("the worker is not started")
        await asyncio.shield(self._run_task)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _health(self) -> tuple[bool, dict[str, Any]]:
        return self.consuming, {
            "tier": self._tier_name,
            "worker_id": self.worker_id,
            "group_id": self.group_id,
            "in_flight": self.in_flight,
            "concurrency": self.concurrency,
            "assigned": sorted(f"{tp.topic}:{tp.partition}" for tp in self._assigned),
            "paused": bool(self._consumer is not None and self._consumer.paused()),
        }

    # -- the consume loop --------------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        interval_s = self._settings.workers.commit_interval_ms / 1000
        while not self._stopping:
            free = self.concurrency - self.in_flight
            if free <= 0:
                self._pause()
                self._capacity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._capacity.wait(), timeout=interval_s)
                await self._maybe_commit()
                continue
            self._resume()
            try:
                batch = await consumer.getmany(timeout_ms=_POLL_TIMEOUT_MS, max_records=free)
            except ConsumerStoppedError:
                break
            except KafkaError as exc:
                logger.warning(
                    "worker %s: fetching from %s failed, retrying: %r", self.worker_id,
                    self.topic, exc,
                )
                await asyncio.sleep(0.5)
                continue
            for tp, records in batch.items():
                if tp not in self._assigned:
                    # Fetched while the partition was being revoked: the new owner reads it.
                    continue
                for record in records:
                    self._begin(tp, record)
            await self._maybe_commit()

    def _pause(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        if assignment and not assignment <= consumer.paused():
            consumer.pause(*assignment)
            self.pauses += 1
            self.metrics.paused.set(1)
            logger.debug(
                "worker %s paused %d partition(s) at %d in flight",
                self.worker_id, len(assignment), self.in_flight,
            )

    def _resume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        paused = consumer.paused()
        if paused:
            consumer.resume(*paused)
            self.metrics.paused.set(0)

    def _begin(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        tracker = self._trackers.get(tp)
        if tracker is None:
            tracker = self._trackers[tp] = OffsetTracker()
        tracker.add(record.offset)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.metrics.in_flight.set(self.in_flight)
        task = asyncio.create_task(self._process(record))
        self._tasks.setdefault(tp, {})[record.offset] = task
        offset = record.offset

        def finished(task: asyncio.Task[None]) -> None:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
            by_offset = self._tasks.get(tp)
            if by_offset is not None and by_offset.get(offset) is task:
                del by_offset[offset]
            # Only a published outcome completes an offset; a cancelled call stays pending so
            # that it is redelivered. `tracker` is this assignment's: a later assignment of
            # the same partition has its own.
            if not task.cancelled() and task.exception() is None:
                tracker.done(offset)
            self._capacity.set()

        task.add_done_callback(finished)

    async def _drain(self, tasks: Sequence[asyncio.Task[None]], grace_s: float) -> None:
        """Let ``tasks`` finish for ``grace_s``, then cancel and await the rest."""
        if grace_s > 0:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
        else:
            pending = set(tasks)
        if pending:
            logger.warning(
                "worker %s: cancelling %d in-flight call(s); they will be redelivered",
                self.worker_id, len(pending),
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- rebalance and commit ----------------------------------------------------------------

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned |= assigned
        for tp in assigned:
            self._committed.pop(tp, None)
        logger.info(
            "worker %s assigned %s",
            self.worker_id, sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._assigned -= revoked
        tasks = [t for tp in revoked for t in self._tasks.get(tp, {}).values()]
        if tasks:
            grace = min(self._settings.workers.shutdown_grace_s, _REVOKE_GRACE_MAX_S)
            logger.info(
                "worker %s: partitions revoked, waiting up to %.1fs for %d in-flight call(s)",
                self.worker_id, grace, len(tasks),
            )
            await self._drain(tasks, 0.0 if self._stopping else grace)
        await self._commit(revoked)
        for tp in revoked:
            self._trackers.pop(tp, None)
            self._tasks.pop(tp, None)
            self._committed.pop(tp, None)
        if revoked:
            logger.info(
                "worker %s revoked %s",
                self.worker_id, sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
            )

    async def _maybe_commit(self) -> None:
        interval_s = self._settings.workers.commit_interval_ms / 1000
        if time.monotonic() - self._last_commit >= interval_s:
            await self._commit()

    async def _commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit, per partition, the offset below which every outcome is published."""
        consumer = self._consumer
        if consumer is None:
            return
        self._last_commit = time.monotonic()
        offsets: dict[TopicPartition, int] = {}
        for tp, tracker in self._trackers.items():
            if partitions is not None and tp not in partitions:
                continue
            offset = tracker.committable()
            if offset is not None and offset != self._committed.get(tp):
                offsets[tp] = offset
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # The group moved on (rebalance) or the broker is away: the next owner reads from
            # the last committed offset, so at worst some outcomes are published twice.
            logger.warning("worker %s: commit of %s failed: %r", self.worker_id, offsets, exc)
            return
        self._committed.update(offsets)
        logger.debug("worker %s committed %s", self.worker_id, offsets)

    # -- one message -------------------------------------------------------------------------

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        headers: Headers = list(record.headers or ())
        try:
            outcome = await self._handle(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug, not an upstream failure: keep the message rather than lose or loop on it.
            logger.exception(
                "worker %s: internal error on %s[%d]@%d",
                self.worker_id, record.topic, record.partition, record.offset,
            )
            outcome = self._deadletter(record, "internal_error", f"{type(exc).__name__}: {exc}")
        if outcome is None:
            return
        try:
            await self._publish(outcome, headers, record)
        finally:
            if outcome.dedup_key is not None:
                self._answering.discard(outcome.dedup_key)
        if outcome.dedup_key is not None:
            self._recent.add(outcome.dedup_key)
        self.metrics.message(outcome.result)

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> _Outcome | None:
        try:
            scored = decode(ScoredRequest, record.value)
        except SchemaError as exc:
            logger.warning(
                "worker %s: undecodable message %s[%d]@%d dead-lettered: %s",
                self.worker_id, record.topic, record.partition, record.offset, exc,
            )
            return self._deadletter(record, exc.kind, str(exc))
        request_id = scored.request.id
        # One key per request and attempt: a request that comes back to this tier later (a
        # same-tier retry) has more attempts and is answered again.
        key = f"{request_id}#{len(scored.attempts)}"
        if key in self._recent or key in self._answering:
            logger.info(
                "worker %s: request %s (attempt %d) already answered; skipping redelivery "
                "%s[%d]@%d",
                self.worker_id, request_id, len(scored.attempts) + 1,
                record.topic, record.partition, record.offset,
            )
            self.metrics.message("duplicate")
            return None
        self._answering.add(key)
        try:
            outcome = await self._answer(scored, record)
        except BaseException:
            self._answering.discard(key)
            raise
        return dataclasses.replace(outcome, dedup_key=key)

    async def _answer(
        self, scored: ScoredRequest, record: ConsumerRecord[bytes, bytes]
    ) -> _Outcome:
        tier = self._tier
        request = scored.request
        model = scored.model or tier.model
        attempts = list(scored.attempts)
        retries = 0
        while True:
            left = remaining_s(request.deadline)
            if left is not None and left <= _MIN_CALL_S:
                return self._deadline_outcome(
                    record, scored, attempts, f"deadline passed {-left:.3f}s before the call"
                )
            full_s = tier_timeout_s(tier, scored.score)
            timeout_s = call_timeout_s(tier, scored.score, left)
            capped = left is not None and left < full_s
            started_at = utcnow()
            t0 = time.perf_counter()
            completion: Completion | None = None
            try:
                try:
                    async with asyncio.timeout(timeout_s):
                        completion = await self._provider.complete(
                            scored, model, httpx_timeout(tier, timeout_s)
                        )
                except TimeoutError as exc:
                    raise map_http_error(exc) from None
                validate_answer(
                    completion.content, completion.finish_reason, request, tier.validation
                )
            except InvalidOutput as exc:
                assert completion is not None
                latency_s = time.perf_counter() - t0
                attempt = self._attempt(
                    model, "invalid_output", started_at, latency_s, completion,
                    error_kind=exc.check, detail=f"{exc.check}: {exc}",
                )
                attempts.append(attempt)
                return self._uproute(
                    record, scored, attempts, "invalid_output", attempt.detail,
                    output=completion.content,
                )
            except UpstreamError as exc:
                latency_s = time.perf_counter() - t0
                left_after = remaining_s(request.deadline)
                if (left_after is not None and left_after <= 0) or (
                    capped and exc.cause == "timeout"
                ):
                    attempts.append(
                        self._attempt(
                            model, "deadline_exceeded", started_at, latency_s, None,
                            error_kind="deadline_exceeded", detail=str(exc),
                        )
                    )
                    return self._deadline_outcome(
                        record, scored, attempts,
                        f"deadline reached during the call ({exc})",
                    )
                cause = self._cause(exc)
                attempts.append(
                    self._attempt(
                        model, cause, started_at, latency_s, None,
                        error_kind=type(exc).__name__, detail=str(exc),
                    )
                )
                retry_after = exc.retry_after_s if isinstance(exc, UpstreamRateLimited) else None
                if exc.retriable and retries < tier.max_retries:
                    backoff_s = tier.retry_backoff_ms / 1000 * (2**retries)
                    if retry_after is not None:
                        backoff_s = max(backoff_s, retry_after)
                    if left_after is None or backoff_s + _MIN_CALL_S < left_after:
                        retries += 1
                        logger.info(
                            "worker %s: request %s %s on %s, retry %d/%d in %.3fs",
                            self.worker_id, request.id, cause, self._tier_name, retries,
                            tier.max_retries, backoff_s,
                        )
                        await asyncio.sleep(backoff_s)
                        continue
                return self._uproute(
                    record, scored, attempts, cause, str(exc), retry_after_s=retry_after
                )
            latency_s = time.perf_counter() - t0
            attempt = self._attempt(model, "ok", started_at, latency_s, completion)
            attempts.append(attempt)
            return self._response(scored, attempts, completion)

    @staticmethod
    def _cause(exc: UpstreamError) -> UpRouteCause:
        causes: dict[str, UpRouteCause] = {
            "timeout": "timeout",
            "rate_limited": "rate_limited",
            "rejected": "rejected",
        }
        return causes.get(exc.cause, "upstream_error")

    def _cost(self, completion: Completion | None) -> float:
        if completion is None:
            return 0.0
        tier = self._tier
        return (
            completion.input_tokens * tier.price_input_per_mtok
            + completion.output_tokens * tier.price_output_per_mtok
        ) / 1_000_000

    def _attempt(
        self,
        model: str,
        outcome: AttemptOutcome,
        started_at: Any,
        latency_s: float,
        completion: Completion | None,
        *,
        error_kind: str | None = None,
        detail: str | None = None,
    ) -> Attempt:
        cost = self._cost(completion)
        input_tokens = completion.input_tokens if completion else 0
        output_tokens = completion.output_tokens if completion else 0
        self.metrics.call(model, outcome, latency_s, input_tokens, output_tokens, cost)
        return Attempt(
            tier=self._tier_name,
            model=model,
            outcome=outcome,
            error_kind=error_kind,
            detail=None if detail is None else _clip(detail, _DETAIL_CHARS),
            latency_ms=latency_s * 1000,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            worker_id=self.worker_id,
            started_at=started_at,
        )

    # -- outcomes ----------------------------------------------------------------------------

    def _response(
        self, scored: ScoredRequest, attempts: list[Attempt], completion: Completion
    ) -> _Outcome:
        request = scored.request
        total_ms = max(0.0, (utcnow() - request.created_at).total_seconds() * 1000)
        response = RouteResponse(
            request_id=request.id,
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            content=completion.content,
            finish_reason=completion.finish_reason,
            usage=Usage(
                input_tokens=completion.input_tokens, output_tokens=completion.output_tokens
            ),
            cost_usd=sum(a.cost_usd for a in attempts),
            route=RouteInfo(
                tier=self._tier_name,
                model=attempts[-1].model,
                category=scored.category,
                score=scored.score,
                reason=scored.reason,
                tiers_tried=[a.tier for a in attempts],
                attempts=attempts,
                total_latency_ms=total_ms,
            ),
        )
        logger.debug(
            "worker %s: request %s answered by %s in %.1f ms",
            self.worker_id, request.id, attempts[-1].model, attempts[-1].latency_ms,
        )
        return _Outcome(
            "response", self._settings.topics.responses, request.id.encode(), encode(response),
            request.id,
        )

    def _uproute(
        self,
        record: ConsumerRecord[bytes, bytes],
        scored: ScoredRequest,
        attempts: list[Attempt],
        cause: UpRouteCause,
        detail: str | None,
        *,
        output: str | None = None,
        retry_after_s: float | None = None,
    ) -> _Outcome:
        request = scored.request
        event = UpRouteEvent(
            scored=scored.model_copy(update={"attempts": attempts}),
            cause=cause,
            detail=None if detail is None else _clip(detail, _DETAIL_CHARS),
            output=None if output is None else output[:MAX_MESSAGE_CHARS],
            retry_after_s=retry_after_s,
        )
        logger.info(
            "worker %s: request %s up-routed from tier %s (%s) %s[%d]@%d: %s",
            self.worker_id, request.id, self._tier_name, cause,
            record.topic, record.partition, record.offset, event.detail,
        )
        return _Outcome(
            "uproute", self._settings.topics.uproute, request.conversation_id.encode(),
            encode(event), request.id,
        )

    def _deadline_outcome(
        self,
        record: ConsumerRecord[bytes, bytes],
        scored: ScoredRequest,
        attempts: list[Attempt],
        why: str,
    ) -> _Outcome:
        logger.warning(
            "worker %s: request %s dead-lettered at tier %s %s[%d]@%d: %s",
            self.worker_id, scored.request.id, self._tier_name,
            record.topic, record.partition, record.offset, why,
        )
        return self._deadletter(
            record, "deadline_exceeded", why, scored=scored, attempts=attempts
        )

    def _deadletter(
        self,
        record: ConsumerRecord[bytes, bytes],
        error_kind: str,
        error: str,
        *,
        scored: ScoredRequest | None = None,
        attempts: list[Attempt] | None = None,
    ) -> _Outcome:
        attempts = attempts or []
        key = record.key
        letter = DeadLetter(
            stage="worker",
            error_kind=error_kind,
            error=_clip(error, _DEADLETTER_ERROR_CHARS),
            original=record.value if record.value is not None else b"",
            request_id=scored.request.id if scored else None,
            conversation_id=scored.request.conversation_id if scored else None,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            source_key=key.decode("utf-8", "replace") if key is not None else None,
            attempts=attempts,
            tiers_tried=[a.tier for a in attempts],
        )
        return _Outcome(
            "deadletter", self._settings.topics.deadletter, key, encode(letter),
            letter.request_id,
        )

    async def _publish(
        self, outcome: _Outcome, headers: Headers, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        """Send ``outcome`` and wait for the broker's acknowledgement, retrying until then.

        A message's offset completes only after this returns; if it never does (the worker
        is stopped first), the message is redelivered.
        """
        producer = self._producer
        assert producer is not None
        for attempt in range(1_000_000):
            try:
                await producer.send_and_wait(
                    outcome.topic, outcome.value, key=outcome.key, headers=headers
                )
                return
            except KafkaError as exc:
                delay = _PUBLISH_RETRY_S[min(attempt, len(_PUBLISH_RETRY_S) - 1)]
                logger.warning(
                    "worker %s: publishing the %s of request %s (%s[%d]@%d) to %s failed, "
                    "retrying in %.2fs: %r",
                    self.worker_id, outcome.result, outcome.request_id, record.topic,
                    record.partition, record.offset, outcome.topic, delay, exc,
                )
                await asyncio.sleep(delay)


async def run_worker(
    settings: Settings,
    tier: str,
    *,
    concurrency: int | None = None,
    worker_id: str | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run one tier worker until SIGTERM/SIGINT (or ``stop`` is set), then shut it down.

    Raises the consume loop's error if it fails.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    installed: list[signal.Signals] = []
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with TierWorker(
            settings, tier, concurrency=concurrency, worker_id=worker_id
        ) as worker:
            stopped = asyncio.create_task(stop.wait())
            joined = asyncio.create_task(worker.join())
            try:
                await asyncio.wait({stopped, joined}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (stopped, joined):
                    task.cancel()
                await asyncio.gather(stopped, joined, return_exceptions=True)
            error = joined.exception() if joined.done() and not joined.cancelled() else None
            if error is not None:
                raise error
            logger.info("worker %s: stop requested", worker.worker_id)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
