"""Two router replicas in one consumer group: state learnt on one is honoured by the other.

Answers (``llm.responses``, keyed by request id) and up-routes (``llm.uproute``) are read by
whichever replica owns their partition; the conversation latch and the user's first-tier
history they produce must reach the replica that routes the conversation's next request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from router_helpers import FakeScorer, Kafka, create_all, request

from schemas.codec import decode, encode
from schemas.messages import RouteInfo, RouteResponse, ScoredRequest, UpRouteEvent
from schemas.settings import Settings
from streams import RouterApp, build_app, running
from streams.tables import default_partition

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_S = 60.0


def requests_partitions(router: RouterApp) -> set[int]:
    topic = router.settings.topics.requests
    return {tp.partition for tp in router.app.consumer.assignment() if tp.topic == topic}


async def settled(routers: list[RouterApp], partitions: int) -> None:
    """Until every replica is ready and they split the requests' partitions between them."""

    def split() -> bool:
        if not all(r.ready for r in routers):
            return False
        owned = [requests_partitions(r) for r in routers]
        return all(owned) and sum(map(len, owned)) == partitions == len(set().union(*owned))

    async def poll() -> None:
        while not split():  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), WAIT_S)


def key_in(prefix: str, partitions: set[int], count: int) -> str:
    """An id whose default partition (of ``count``) is one of ``partitions``."""
    for i in range(10_000):
        candidate = f"{prefix}-{i}"
        if default_partition(candidate.encode(), count) in partitions:
            return candidate
    raise AssertionError(f"no {prefix} id lands in {partitions}")


async def until(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async def poll() -> None:
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s:.0f} s: {what}") from None


@contextlib.asynccontextmanager
async def kafka_of(settings: Settings) -> AsyncIterator[Kafka]:
    kafka = Kafka(settings)
    try:
        yield kafka
    finally:
        await kafka.close()


def answer(request_id: str, conversation: str, user: str, tier: str) -> RouteResponse:
    return RouteResponse(
        request_id=request_id, conversation_id=conversation, user_id=user, content="ok",
        route=RouteInfo(tier=tier, model="m", category="general", score=0.5, reason="score",
                        tiers_tried=[tier], attempts=[], total_latency_ms=1.0),
    )


async def test_latch_and_user_history_cross_replicas(
    router_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Replica R owns the partition of conversation ``conv``; the answer of its first turn
    and the user's up-routes land on partitions of replica O. R must route the next turn
    latched at the tier that answered, and a borderline request of that user one tier up."""
    base = router_settings(history_min_outcomes=2)
    count = base.topics.partitions
    assert count > 1
    await create_all(base)

    def replica(name: str) -> RouterApp:
        router = base.router.model_copy(update={"data_dir": tmp_path / name})
        return build_app(base.model_copy(update={"router": router}), scorer=FakeScorer())

    t = base.topics
    tiers = [t.tier(name) for name in base.chain]
    first, second = replica("a"), replica("b")
    async with kafka_of(base) as kafka, running(first), running(second):
        await settled([first, second], count)
        # R routes the conversation; O reads its answer and the user's up-routes.
        routes, other = sorted((first, second), key=lambda r: len(requests_partitions(r)))
        r_parts, o_parts = requests_partitions(routes), requests_partitions(other)
        conv = key_in("conv", r_parts, count)
        user = key_in("user", o_parts, count)  # its outcomes are written by O, read by R

        async def route(text: str, conversation: str) -> ScoredRequest:
            """Send one request; how it was routed (its first record on a tier topic)."""
            req = request(text, user=user, conversation=conversation)
            await kafka.produce(t.requests, encode(req), key=conversation.encode())

            async def routed() -> ScoredRequest:
                wanted = 1
                while True:
                    records = await kafka.consume(tiers, wanted, timeout_s=WAIT_S)
                    found = [s for r in records
                             if (s := decode(ScoredRequest, r.value)).request.id == req.id]
                    if found:
                        return found[0]
                    wanted = len(records) + 1

            return await asyncio.wait_for(routed(), WAIT_S)

        # Turn 1 goes to the fast tier, which up-routes it; frontier answers. The answer is
        # keyed by request id: O reads it.
        turn1 = await route("[score=0.1 conf=0.99]", conv)
        assert (turn1.tier, turn1.reason) == ("fast", "score")
        answered = key_in("req", o_parts, count)
        await kafka.produce(t.responses, encode(answer(answered, conv, user, "frontier")),
                            key=answered.encode())
        await until("R holds the latch O's answer set",
                    lambda: routes.state.conversation(conv).tier_index == 2)
        turn2 = await route("[score=0.1 conf=0.99]", conv)
        assert (turn2.tier, turn2.reason, turn2.features.turn) == ("frontier", "latched", 2)

        # Two first-tier up-routes of the same user, in conversations O owns.
        for i in range(2):
            elsewhere = key_in(f"conv-o{i}", o_parts, count)
            scored = turn1.model_copy(update={"request": request("x", user=user,
                                                                 conversation=elsewhere)})
            event = UpRouteEvent(scored=scored, cause="invalid_output")
            await kafka.produce(t.uproute, encode(event), key=elsewhere.encode())
        await until("R reads the user's up-routes O counted",
                    lambda: routes.state.user(user).outcomes == 2)
        assert routes.state.user(user).uproutes == 2
        borderline = await route("[score=0.25]", key_in("conv-r", r_parts, count))
        assert (borderline.tier, borderline.reason) == ("balanced", "history")
        assert borderline.features.user_outcomes == 2

        # R leaves: O takes its partitions over and recovers both from the changelogs.
        await routes.stop()
        await asyncio.wait_for(other.wait_ready(), WAIT_S)
        await until("O owns every partition",
                    lambda: requests_partitions(other) == set(range(count)), WAIT_S)
        turn3 = await route("[score=0.1 conf=0.99]", conv)
        assert (turn3.tier, turn3.reason, turn3.features.turn) == ("frontier", "latched", 3)
        again = await route("[score=0.25]", key_in("conv-r2", r_parts, count))
        assert (again.tier, again.reason) == ("balanced", "history")
