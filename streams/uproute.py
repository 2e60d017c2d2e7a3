"""The up-route stage.

:class:`UpRouteStage` reads ``llm.uproute``: a tier could not answer; the request goes to
the next untried tier of the chain, or, when the chain is exhausted, to the dead-letter
topic with its whole attempt history. An invalid output on the last tier is never accepted
silently: it is a dead letter, or (``router.frontier_invalid = "flag"``) a flagged answer.
Each up-route also goes to the :class:`~streams.outcomes.OutcomeFeed` (a failure on the first
tier counts against the user).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.messages import RouteInfo, RouteResponse, UpRouteEvent, utcnow
from schemas.settings import Settings
from streams.metrics import RouterMetrics
from streams.outcomes import OutcomeFeed
from streams.policy import RoutePolicy
from streams.topics import Record, Sink, dead_letter

__all__ = ["UpRouteStage"]

logger = logging.getLogger(__name__)


class UpRouteStage:
    """Handle one ``llm.uproute`` record: next tier, flagged answer, or dead letter."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: RoutePolicy,
        feed: OutcomeFeed,
        sink: Sink,
        metrics: RouterMetrics,
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._feed = feed
        self._sink = sink
        self._metrics = metrics

    async def process(self, record: Record) -> Awaitable[Any]:
        """Publish what ``record`` becomes; returns the delivery to await before acking."""
        topics = self._settings.topics
        try:
            event = decode(UpRouteEvent, record.value)
        except SchemaError as exc:
            logger.warning(
                "bad up-route event at %s[%d]@%d: %s: %s",
                record.topic, record.partition, record.offset, exc.kind, exc,
            )
            self._metrics.dead_letters.labels(stage="uproute", error_kind=exc.kind).inc()
            value = dead_letter(record, stage="uproute", error_kind=exc.kind, error=str(exc))
            return await self._sink.send(
                topics.deadletter, key=record.key, value=value, headers=record.headers
            )

        outcomes = await self._feed.uprouted(event, record.headers)
        delivery = await self._route(record, event)
        return asyncio.gather(delivery, *outcomes) if outcomes else delivery

    async def _route(self, record: Record, event: UpRouteEvent) -> Awaitable[Any]:
        topics = self._settings.topics
        scored = event.scored
        request = scored.request
        where = f"{record.topic}[{record.partition}]@{record.offset}"

        if event.cause == "invalid_output" and self._policy.is_last(scored.tier):
            if self._settings.router.frontier_invalid == "flag":
                self._metrics.uproutes.labels(cause=event.cause, outcome="flagged").inc()
                logger.warning(
                    "request %s at %s: invalid output on the last tier %s, returned flagged",
                    request.id, where, scored.tier,
                )
                return await self._flagged(record, event)
            return await self._exhausted(
                record, event,
                f"invalid output on the last tier {scored.tier}: {event.detail or 'no detail'}",
            )

        decision = self._policy.next_tier(scored, event.cause)
        if decision.tier is None:
            return await self._exhausted(record, event, decision.detail)

        self._metrics.uproutes.labels(cause=event.cause, outcome="uprouted").inc()
        logger.info("request %s at %s: %s", request.id, where, decision.detail)
        detail = f"{scored.detail}; {decision.detail}" if scored.detail else decision.detail
        # A pinned model belongs to the tier that failed; the next tier answers with its own.
        again = scored.model_copy(
            update={
                "tier": decision.tier,
                "model": None if decision.tier != scored.tier else scored.model,
                "detail": detail[:2000],
                "scored_at": utcnow(),
            }
        )
        return await self._sink.send(
            topics.tier(decision.tier),
            key=request.conversation_id.encode(),
            value=encode(again),
            headers=record.headers,
        )

    async def _exhausted(self, record: Record, event: UpRouteEvent, why: str) -> Awaitable[Any]:
        scored = event.scored
        self._metrics.uproutes.labels(cause=event.cause, outcome="dead_letter").inc()
        self._metrics.dead_letters.labels(stage="uproute", error_kind=event.cause).inc()
        logger.warning(
            "request %s at %s[%d]@%d: dead letter after %s: %s",
            scored.request.id, record.topic, record.partition, record.offset,
            scored.tiers_tried, why,
        )
        value = dead_letter(
            record,
            stage="uproute",
            error_kind=event.cause,
            error=f"{why} (tiers tried: {', '.join(scored.tiers_tried) or scored.tier})",
            request_id=scored.request.id,
            conversation_id=scored.request.conversation_id,
            attempts=scored.attempts,
        )
        return await self._sink.send(
            self._settings.topics.deadletter,
            key=scored.request.id.encode(),
            value=value,
            headers=record.headers,
        )

    async def _flagged(self, record: Record, event: UpRouteEvent) -> Awaitable[Any]:
        scored = event.scored
        request = scored.request
        last = scored.attempts[-1] if scored.attempts else None
        response = RouteResponse(
            request_id=request.id,
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            content=event.output or "",
            route=RouteInfo(
                tier=scored.tier,
                model=last.model if last else (scored.model or scored.tier),
                category=scored.category,
                score=scored.score,
                reason=scored.reason,
                tiers_tried=scored.tiers_tried,
                attempts=scored.attempts,
                total_latency_ms=sum(a.latency_ms for a in scored.attempts),
            ),
            cost_usd=sum(a.cost_usd for a in scored.attempts),
            flagged=True,
            flag_reason=f"invalid_output: {event.detail or 'failed validation'}",
        )
        return await self._sink.send(
            self._settings.topics.responses,
            key=request.id.encode(),
            value=encode(response),
            headers=record.headers,
        )
