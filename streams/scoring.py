"""The scoring stage: a batch of raw requests in, one scored request per tier topic out.

Per batch: decode every record (bad ones become dead letters), render the valid ones, score
them in one classifier call on a worker thread, then route each in arrival order (so two
turns of one conversation in one batch see each other's state) and publish. The batch
returns only when the broker has every message it produced: the caller acks the batch
after that (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, MutableMapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.messages import RouteRequest, ScoredRequest
from schemas.settings import Settings
from streams.features import compute_features
from streams.metrics import RouterMetrics
from streams.policy import RoutePolicy, ScoreLike, UnknownTier
from streams.scorer import ScorerProtocol, render
from streams.state import ConversationState, UserStats
from streams.topics import Record, Sink, dead_letter

__all__ = ["RouterState", "ScoringStage"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouterState:
    """The two tables: conversation id → state, user id → first-tier outcomes.

    Any mutable mapping works (Faust tables in the app, dicts in tests); values are JSON.
    """

    conversations: MutableMapping[str, Any]
    users: MutableMapping[str, Any]

    def conversation(self, conversation_id: str) -> ConversationState:
        return ConversationState.from_json(self.conversations.get(conversation_id))

    def user(self, user_id: str) -> UserStats:
        return UserStats.from_json(self.users.get(user_id))


class ScoringStage:
    """Decode, score, route and publish one batch of ``llm.requests`` records."""

    def __init__(
        self,
        settings: Settings,
        *,
        scorer: ScorerProtocol,
        state: RouterState,
        sink: Sink,
        metrics: RouterMetrics,
        executor: Executor | None = None,
        clock: Any = time.time,
    ) -> None:
        self._settings = settings
        self._policy = RoutePolicy.from_settings(settings)
        self._scorer = scorer
        self._state = state
        self._sink = sink
        self._metrics = metrics
        self._executor = executor
        self._clock = clock
        self._log_prompts = settings.router.log_prompts

    @property
    def policy(self) -> RoutePolicy:
        return self._policy

    async def process(self, records: Sequence[Record]) -> None:
        """Handle one batch; never raises for a bad record."""
        started = time.time()
        metrics = self._metrics
        for record in records:
            if record.timestamp is not None:
                metrics.wait_seconds.observe(max(0.0, started - record.timestamp))
            if record.received is not None:
                metrics.batching_seconds.observe(max(0.0, started - record.received))
                if record.timestamp is not None:
                    metrics.fetch_seconds.observe(max(0.0, record.received - record.timestamp))
        pending: list[Awaitable[Any]] = []
        valid: list[tuple[Record, RouteRequest]] = []
        for record in records:
            request = await self._decode(record, pending)
            if request is not None:
                valid.append((record, request))
        if valid:
            await self._score_and_route(valid, pending)
        if pending:
            sent = time.perf_counter()
            await asyncio.gather(*pending)
            self._metrics.produce_seconds.observe(time.perf_counter() - sent)

    async def _decode(self, record: Record, pending: list[Awaitable[Any]]) -> RouteRequest | None:
        try:
            return decode(RouteRequest, record.value,
                          max_bytes=self._settings.router.max_request_bytes)
        except SchemaError as exc:
            logger.warning(
                "bad request at %s[%d]@%d (key %s): %s: %s",
                record.topic, record.partition, record.offset, record.key_text, exc.kind, exc,
            )
            pending.append(await self._dead(record, "ingest", exc.kind, str(exc)))
            return None

    async def _score_and_route(
        self, valid: list[tuple[Record, RouteRequest]], pending: list[Awaitable[Any]]
    ) -> None:
        turns = self._turns(valid)
        texts = [render(req, turn=turn) for (_, req), turn in zip(valid, turns, strict=True)]
        started = time.perf_counter()
        try:
            scores = await self._score(texts)
        except Exception as exc:  # the classifier failed: every request of the batch is lost
            logger.exception("classifier failed on a batch of %d", len(texts))
            for record, request in valid:
                pending.append(await self._dead(
                    record, "score", type(exc).__name__, f"classifier failed: {exc!r}",
                    request=request,
                ))
            return
        self._metrics.scoring_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(texts))
        for (record, request), turn, score in zip(valid, turns, scores, strict=True):
            pending.append(await self._route(record, request, turn, score))

    def _turns(self, valid: list[tuple[Record, RouteRequest]]) -> list[int]:
        # The turn is what the producer says or one past what the router counted, whichever is
        # larger; two turns of one conversation in one batch count in order.
        counted: dict[str, int] = {}
        turns = []
        for _, request in valid:
            cid = request.conversation_id
            before = counted.get(cid)
            if before is None:
                before = self._state.conversation(cid).turns
            turn = max(request.turn, before + 1)
            counted[cid] = turn
            turns.append(turn)
        return turns

    async def _score(self, texts: list[str]) -> Sequence[ScoreLike]:
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(self._executor, self._scorer.score, texts)
        if len(scores) != len(texts):
            raise RuntimeError(f"classifier returned {len(scores)} scores for {len(texts)} texts")
        return scores

    async def _route(
        self, record: Record, request: RouteRequest, turn: int, score: ScoreLike
    ) -> Awaitable[Any]:
        now = self._clock()
        cid = request.conversation_id
        conversation = self._state.conversation(cid)
        features = compute_features(request, turn=turn, user=self._state.user(request.user_id))
        try:
            decision = self._policy.route(request, score, features, conversation, now=now)
        except UnknownTier as exc:
            logger.warning(
                "request %s at %s[%d]@%d: %s",
                request.id, record.topic, record.partition, record.offset, exc,
            )
            return await self._dead(record, "ingest", "invalid", str(exc), request=request)

        # Forced routes are the caller's choice for one request: they do not move the latch.
        latched = conversation.latched_index(now, self._policy.latch_idle_s)
        tier_index = latched if decision.reason == "forced" else max(latched, decision.tier_index)
        self._state.conversations[cid] = ConversationState(
            turns=turn, tier_index=tier_index, seen_at=now
        ).to_json()

        scored = ScoredRequest(
            request=request,
            score=min(max(float(score.complexity), 0.0), 1.0),
            category=decision.category,
            probabilities={k: float(v) for k, v in score.probabilities.items()},
            confidence=min(max(float(score.confidence), 0.0), 1.0),
            features=features,
            tier=decision.tier,
            model=decision.model,
            reason=decision.reason,
            detail=decision.detail,
        )
        self._metrics.requests.labels(
            tier=decision.tier, category=decision.category, reason=decision.reason
        ).inc()
        if record.timestamp is not None:
            self._metrics.stage_seconds.observe(max(0.0, now - record.timestamp))
        if self._log_prompts:
            logger.info(
                "request %s at %s[%d]@%d → %s (%s, score %.3f, %s): %r",
                request.id, record.topic, record.partition, record.offset, decision.tier,
                decision.reason, score.complexity, decision.category, request.prompt_text(),
            )
        else:
            logger.debug(
                "request %s at %s[%d]@%d → %s (%s, score %.3f, %s)",
                request.id, record.topic, record.partition, record.offset, decision.tier,
                decision.reason, score.complexity, decision.category,
            )
        return await self._sink.send(
            self._settings.topics.tier(decision.tier),
            key=cid.encode(),
            value=encode(scored),
            headers=record.headers,
        )

    async def _dead(
        self,
        record: Record,
        stage: str,
        kind: str,
        error: str,
        *,
        request: RouteRequest | None = None,
    ) -> Awaitable[Any]:
        assert stage in ("ingest", "score")
        self._metrics.dead_letters.labels(stage=stage, error_kind=kind).inc()
        value = dead_letter(
            record,
            stage="ingest" if stage == "ingest" else "score",
            error_kind=kind,
            error=error,
            request_id=request.id if request else None,
            conversation_id=request.conversation_id if request else None,
        )
        return await self._sink.send(
            self._settings.topics.deadletter, key=record.key, value=value, headers=record.headers
        )
