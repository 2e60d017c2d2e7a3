"""The outcome feed: what answers and up-routes teach the router, applied where that state lives.

An answer arrives on ``llm.responses`` keyed by request id and an up-route on ``llm.uproute``;
the replica that reads one is not, in general, the one that owns the state it changes. The
``conversations`` table is partitioned like ``llm.requests`` (by conversation id), and the
``users`` table has one writer per user. So :class:`OutcomeFeed` turns each answer and
up-route into an :class:`Outcome` and publishes it keyed by the id of the state it changes:

* ``{app_id}-conversation-outcomes`` (key: conversation id): answers that may raise the
  conversation's latch. It has ``topics.partitions`` partitions, so Faust assigns its
  partition *p* with partition *p* of ``llm.requests`` and of the ``conversations``
  changelog: the replica that routes a conversation also applies its latch.
* ``{app_id}-user-outcomes`` (key: user id): outcomes on the first tier of the chain.

:class:`OutcomeLedger` applies them, called by the agent of each topic only: every key of
either table has a single writer. Example::

    feed = OutcomeFeed(settings, policy, sink)
    deliveries = await feed.answered(response)      # 0, 1 or 2 outcome records
    ledger = OutcomeLedger(policy, state)
    ledger.latch(read_outcome(record))              # on {app_id}-conversation-outcomes
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.messages import SCHEMA_VERSION, Identifier, RouteResponse, UpRouteEvent
from schemas.settings import Settings
from streams.policy import RoutePolicy
from streams.scoring import RouterState
from streams.state import ConversationState
from streams.topics import Record, Sink

__all__ = ["Outcome", "OutcomeFeed", "OutcomeLedger", "read_outcome"]

logger = logging.getLogger(__name__)


class Outcome(BaseModel):
    """How one request fared on one tier: answered, or failed (up-routed or flagged).

    Router-internal (it never leaves the router's own topics), versioned like the public
    messages so that replicas of two versions can share the topics during an upgrade.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: Identifier
    conversation_id: Identifier
    user_id: Identifier
    tier: str = Field(min_length=1, max_length=128)
    failed: bool


def read_outcome(record: Record) -> Outcome | None:
    """The outcome in ``record``; ``None`` (logged) for one that cannot be read."""
    try:
        return decode(Outcome, record.value)
    except SchemaError as exc:
        # The router wrote it itself: nothing to dead-letter, nothing to retry.
        logger.warning(
            "unreadable outcome at %s[%d]@%d: %s",
            record.topic, record.partition, record.offset, exc,
        )
        return None


class OutcomeFeed:
    """Publishes the outcome of each answer and up-route to the topics of the state it changes.

    * an answer (not flagged) on a tier of the chain may raise its conversation's latch;
    * any outcome on the first tier counts for its user (up-routes and flagged answers count
      as failed).
    """

    def __init__(self, settings: Settings, policy: RoutePolicy, sink: Sink) -> None:
        self._policy = policy
        self._sink = sink
        self._conversation_topic = settings.router.outcome_topic("conversation")
        self._user_topic = settings.router.outcome_topic("user")

    async def answered(
        self, response: RouteResponse, headers: Sequence[tuple[str, bytes]] = ()
    ) -> list[Awaitable[Any]]:
        """Publish what ``response`` teaches; returns the deliveries to await before acking."""
        return await self._publish(
            Outcome(
                request_id=response.request_id,
                conversation_id=response.conversation_id,
                user_id=response.user_id,
                tier=response.route.tier,
                failed=response.flagged,
            ),
            headers,
        )

    async def uprouted(
        self, event: UpRouteEvent, headers: Sequence[tuple[str, bytes]] = ()
    ) -> list[Awaitable[Any]]:
        """Publish what an up-route teaches (only first-tier ones count, against the user)."""
        request = event.scored.request
        return await self._publish(
            Outcome(
                request_id=request.id,
                conversation_id=request.conversation_id,
                user_id=request.user_id,
                tier=event.scored.tier,
                failed=True,
            ),
            headers,
        )

    async def record_response(self, record: Record) -> list[Awaitable[Any]]:
        """Feed one ``llm.responses`` record; a malformed one is logged and skipped."""
        try:
            response = decode(RouteResponse, record.value)
        except SchemaError as exc:
            # Not ours to dead-letter: the tier worker owns what it wrote.
            logger.warning(
                "unreadable response at %s[%d]@%d: %s",
                record.topic, record.partition, record.offset, exc,
            )
            return []
        return await self.answered(response, record.headers)

    async def _publish(
        self, outcome: Outcome, headers: Sequence[tuple[str, bytes]]
    ) -> list[Awaitable[Any]]:
        chain = self._policy.chain
        value = encode(outcome)
        deliveries = []
        if not outcome.failed and outcome.tier in chain:
            deliveries.append(await self._sink.send(
                self._conversation_topic, key=outcome.conversation_id.encode(), value=value,
                headers=headers,
            ))
        if outcome.tier == chain[0]:
            deliveries.append(await self._sink.send(
                self._user_topic, key=outcome.user_id.encode(), value=value, headers=headers,
            ))
        return deliveries


class OutcomeLedger:
    """Applies outcomes to the tables: :meth:`latch` for the ``conversations`` table,
    :meth:`count` for the ``users`` table.

    * an answer on a tier raises the conversation's latch to that tier (never lowers it);
    * an outcome on the first tier counts for the user, failed or not.
    """

    def __init__(self, policy: RoutePolicy, state: RouterState, clock: Any = time.time) -> None:
        self._policy = policy
        self._state = state
        self._clock = clock

    def latch(self, outcome: Outcome) -> None:
        chain = self._policy.chain
        if outcome.failed or outcome.tier not in chain:
            return
        index = chain.index(outcome.tier)
        now = self._clock()
        current = self._state.conversation(outcome.conversation_id)
        if index > current.latched_index(now, self._policy.latch_idle_s):
            self._state.conversations[outcome.conversation_id] = ConversationState(
                turns=current.turns, tier_index=index, seen_at=now
            ).to_json()

    def count(self, outcome: Outcome) -> None:
        if outcome.tier != self._policy.chain[0]:
            return
        stats = self._state.user(outcome.user_id).record(uproute=outcome.failed)
        self._state.users[outcome.user_id] = stats.to_json()
