"""The router against the real broker: routing, state across restarts, dead letters, up-routes."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from router_helpers import FakeScorer, Kafka, create_all, fake_score, request

from schemas.codec import decode, encode
from schemas.messages import (
    Attempt,
    ChatMessage,
    DeadLetter,
    RouteInfo,
    RouteRequest,
    RouteResponse,
    ScoredRequest,
    UpRouteEvent,
)
from schemas.settings import Settings
from streams import build_app, running
from streams.tables import default_partition

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def kafka_for() -> AsyncIterator[Callable[[Settings], Kafka]]:
    made: list[Kafka] = []

    def make(settings: Settings) -> Kafka:
        made.append(Kafka(settings))
        return made[-1]

    yield make
    for k in made:
        await k.close()


def tier_topics(settings: Settings) -> list[str]:
    return [settings.topics.tier(t) for t in settings.chain]


async def test_mixed_requests_land_once_on_expected_tier(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka]
) -> None:
    settings = router_settings(batch_max=64, batch_within_ms=5)
    await create_all(settings)
    kafka = kafka_for(settings)
    rng = random.Random(7)
    expected: dict[str, str] = {}
    items = []
    for i in range(1000):
        score = round(rng.random(), 3)
        forced = "balanced" if i % 50 == 0 else None
        req = request(f"q{i} [score={score}]", user=f"u-{i % 40}", forced_tier=forced)
        if forced:
            expected[req.id] = forced
        else:
            expected[req.id] = "fast" if score < 0.3 else "balanced" if score < 0.7 else "frontier"
        items.append((settings.topics.requests, encode(req), req.conversation_id.encode()))
    scorer = FakeScorer()
    async with running(build_app(settings, scorer=scorer)) as router:
        await kafka.produce_many(items)
        records = await kafka.consume(tier_topics(settings), 1000, timeout_s=120, settle_s=1.0)
        sample = router.metrics.registry.get_sample_value
        # Each request's wait splits into fetch and batching: Faust stamped every one read.
        assert sample("router_fetch_seconds_count") == 1000
        assert sample("router_batching_seconds_count") == 1000
    assert len(records) == 1000
    seen = collections.Counter()
    for rec in records:
        scored = decode(ScoredRequest, rec.value)
        seen[scored.request.id] += 1
        assert rec.topic == settings.topics.tier(expected[scored.request.id])
        assert rec.key == scored.request.conversation_id.encode()
        assert scored.reason == ("forced" if scored.request.forced_tier else "score")
    assert set(seen) == set(expected) and set(seen.values()) == {1}
    assert max(scorer.calls) > 1, "requests were scored one by one, not in batches"


async def test_depth_latch_and_restart_keep_state(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka]
) -> None:
    settings = router_settings(depth_turn=3, depth_confidence=0.95)
    await create_all(settings)
    kafka = kafka_for(settings)
    conv = "conv-restart"
    requests_topic = settings.topics.requests

    async def turn(text: str) -> ScoredRequest:
        before = len(seen)
        req = request(text, conversation=conv)
        await kafka.produce(requests_topic, encode(req), key=conv.encode(),
                            headers=[("traceparent", b"00-abc-def-01")])
        recs = await kafka.consume(tier_topics(settings), before + 1, timeout_s=60)
        recs.sort(key=lambda r: r.timestamp)
        seen[:] = recs
        return decode(ScoredRequest, recs[-1].value)

    seen: list[Any] = []
    async with running(build_app(settings, scorer=FakeScorer())):
        first = await turn("[score=0.8 conf=0.99]")   # frontier by score
        assert (first.tier, first.reason) == ("frontier", "score")
        second = await turn("[score=0.1 conf=0.99]")  # latched at frontier
        assert (second.tier, second.reason) == ("frontier", "latched")
        assert second.features.turn == 2
    assert dict(seen[-1].headers)["traceparent"] == b"00-abc-def-01"

    # A new process: turn count and latch come back from the changelog.
    async with running(build_app(settings, scorer=FakeScorer())):
        third = await turn("[score=0.1 conf=0.5]")
        assert third.features.turn == 3
        assert (third.tier, third.reason) == ("frontier", "latched")


async def test_depth_moves_conversation_up(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka]
) -> None:
    settings = router_settings(depth_turn=2, depth_confidence=0.95)
    await create_all(settings)
    kafka = kafka_for(settings)
    conv = "conv-depth"
    async with running(build_app(settings, scorer=FakeScorer())):
        for text in ("[score=0.1 conf=0.99]", "[score=0.1 conf=0.5]"):
            req = request(text, conversation=conv)
            await kafka.produce(settings.topics.requests, encode(req), key=conv.encode())
        recs = await kafka.consume(tier_topics(settings), 2, timeout_s=60)
    by_turn = sorted((decode(ScoredRequest, r.value) for r in recs), key=lambda s: s.features.turn)
    assert [(s.tier, s.reason) for s in by_turn] == [("fast", "score"), ("balanced", "depth")]


async def test_malformed_messages_go_to_dead_letter_and_agent_keeps_going(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka]
) -> None:
    settings = router_settings(max_request_bytes=2048)
    await create_all(settings)
    kafka = kafka_for(settings)
    t = settings.topics
    bad = [b"not json", b'{"user_id": "u"}', b"[1, 2]", encode(request("x" * 4000)),
           encode(request("[score=0.5]", forced_tier="nope"))]
    async with running(build_app(settings, scorer=FakeScorer())):
        for i, value in enumerate(bad):
            await kafka.produce(t.requests, value, key=f"k{i}".encode())
        good = request("[score=0.5]")
        await kafka.produce(t.requests, encode(good), key=good.conversation_id.encode())
        letters = await kafka.consume([t.deadletter], len(bad), timeout_s=60)
        routed = await kafka.consume(tier_topics(settings), 1, timeout_s=60)
    kinds = sorted(decode(DeadLetter, r.value).error_kind for r in letters)
    assert kinds == ["invalid", "invalid", "invalid", "not_json", "too_large"]
    originals = {decode(DeadLetter, r.value).original for r in letters}
    assert originals == set(bad)
    for r in letters:
        dl = decode(DeadLetter, r.value)
        assert dl.stage == "ingest" and dl.source_topic == t.requests
        assert dl.source_offset is not None
    assert decode(ScoredRequest, routed[0].value).request.id == good.id


def _failed(scored: ScoredRequest, cause: str = "timeout") -> UpRouteEvent:
    outcome = "invalid_output" if cause == "invalid_output" else cause
    attempt = Attempt(tier=scored.tier, model="m", outcome=outcome)  # type: ignore[arg-type]
    failed = scored.model_copy(update={"attempts": [*scored.attempts, attempt]})
    return UpRouteEvent(scored=failed, cause=cause, output="bad" if outcome != "timeout" else None)  # type: ignore[arg-type]


async def test_uproute_chain_to_dead_letter_without_loops(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka]
) -> None:
    settings = router_settings()
    await create_all(settings)
    kafka = kafka_for(settings)
    t = settings.topics
    req = request("[score=0.1]")
    async with running(build_app(settings, scorer=FakeScorer())):
        await kafka.produce(t.requests, encode(req), key=req.conversation_id.encode())
        tiers = []
        for _ in settings.chain:
            recs = await kafka.consume(tier_topics(settings), len(tiers) + 1, timeout_s=60)
            recs.sort(key=lambda r: r.timestamp)
            scored = decode(ScoredRequest, recs[-1].value)
            tiers.append(scored.tier)
            await kafka.produce(t.uproute, encode(_failed(scored)), key=req.id.encode())
        letters = await kafka.consume([t.deadletter], 1, timeout_s=60)
        extra = await kafka.consume(tier_topics(settings), 3, timeout_s=60, settle_s=1.5)
    assert tiers == ["fast", "balanced", "frontier"]
    assert len(extra) == 3, "a tier got the request twice"
    dl = decode(DeadLetter, letters[0].value)
    assert (dl.stage, dl.error_kind, dl.request_id) == ("uproute", "timeout", req.id)
    assert dl.tiers_tried == ["fast", "balanced", "frontier"]
    assert decode(UpRouteEvent, dl.original).request_id == req.id


async def test_frontier_invalid_output_flagged_and_user_history(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka]
) -> None:
    settings = router_settings(frontier_invalid="flag", history_min_outcomes=2)
    await create_all(settings)
    kafka = kafka_for(settings)
    t = settings.topics
    app = build_app(settings, scorer=FakeScorer())
    async with running(app):
        frontier = ScoredRequest(request=request("[score=0.9]", user="u-bad"), score=0.9,
                                 category="general", tier="frontier", reason="score")
        await kafka.produce(t.uproute, encode(_failed(frontier, "invalid_output")))
        for _ in range(2):   # two up-routes from the first tier count against the user
            fast = frontier.model_copy(update={"tier": "fast"})
            await kafka.produce(t.uproute, encode(_failed(fast, "invalid_output")))
        responses = await kafka.consume([t.responses], 1, timeout_s=60)

        async def counted() -> None:
            while app.state.user("u-bad").outcomes < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

        await asyncio.wait_for(counted(), 30)
        # A borderline request of that user now goes one tier up.
        req = request("[score=0.25]", user="u-bad")
        await kafka.produce(t.requests, encode(req), key=req.conversation_id.encode())
        # balanced: the two up-routed fast requests, then the borderline one.
        recs = await kafka.consume([t.tier("balanced")], 3, timeout_s=60)
    flagged = decode(RouteResponse, responses[0].value)
    assert flagged.flagged and flagged.content == "bad"
    [scored] = [s for r in recs if (s := decode(ScoredRequest, r.value)).request.id == req.id]
    assert scored.reason == "history"
    assert scored.features.user_outcomes == 2 and scored.features.user_uproute_rate == 1.0


async def test_fresh_router_first_write_is_a_table_write(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka]
) -> None:
    """A new router whose first act is a table write (an answer arrives before any request):
    the write must not need the producer's metadata (it used to raise TypeError and kill the
    ``outcomes`` agent), and each record lands in the default partitioner's partition."""
    settings = router_settings()
    await create_all(settings)
    kafka = kafka_for(settings)
    t = settings.topics
    users = [f"user-{i}" for i in range(8)]
    app = build_app(settings, scorer=FakeScorer())
    async with running(app):
        for user in users:
            answer = RouteResponse(
                request_id=f"r-{user}", conversation_id=f"c-{user}", user_id=user, content="hi",
                route=RouteInfo(tier="balanced", model="m", category="general", score=0.5,
                                reason="score", tiers_tried=["balanced"],
                                attempts=[Attempt(tier="balanced", model="m", outcome="ok")],
                                total_latency_ms=1.0),
            )
            # Three writes: the fast answer counts for the user and latches the conversation
            # at fast, the balanced answer raises the latch.
            first = answer.model_copy(update={"route": answer.route.model_copy(
                update={"tier": "fast", "tiers_tried": ["fast"]})})
            await kafka.produce(t.responses, encode(first), key=f"c-{user}".encode())
            await kafka.produce(t.responses, encode(answer), key=f"c-{user}".encode())
        changelogs = [f"{settings.router.app_id}-users-changelog",
                      f"{settings.router.app_id}-conversations-changelog"]
        records = await kafka.consume(changelogs, 3 * len(users), timeout_s=60)
        assert all(app.state.user(u).outcomes == 1 for u in users)
        assert all(app.state.conversation(f"c-{u}").tier_index == 1 for u in users)
    assert len(records) == 3 * len(users)
    for rec in records:
        assert rec.key is not None
        # Faust writes the key JSON-encoded; the partition follows the raw id, like the
        # requests of that conversation (producers key them by the raw id).
        raw_key = json.loads(rec.key).encode()
        assert rec.partition == default_partition(raw_key, t.partitions), rec


async def test_watchdog_reports_a_partition_that_stops_being_read(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka]
) -> None:
    """A partition Faust stops delivering (paused here, as its flow control would) while
    records wait on it: the watchdog names it and tells the process to exit."""
    settings = router_settings(stall_timeout_s=3.0)
    await create_all(settings)
    kafka = kafka_for(settings)
    app = build_app(settings, scorer=FakeScorer())
    async with running(app):
        req = request("[score=0.1]", conversation="c-stuck")
        partition = default_partition(b"c-stuck", settings.topics.partitions)
        app.app.consumer.pause_partitions([TP(settings.topics.requests, partition)])
        await kafka.produce(settings.topics.requests, encode(req), key=b"c-stuck")
        await asyncio.wait_for(app.stalled.wait(), 60)
        assert app.stall_reason.startswith(f"{settings.topics.requests}[{partition}]")
        assert "paused_partitions=True" in app.stall_reason


_ROOT = Path(__file__).resolve().parents[2]
_MODEL = _ROOT / "classifier_onnx" / "model"


@pytest.mark.skipif(not (_MODEL / "model.onnx").exists(), reason="classifier model not shipped")
async def test_real_classifier_routes_sample_prompts(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka]
) -> None:
    from classifier_onnx import Scorer
    from streams import RoutePolicy, render

    settings = router_settings()
    await create_all(settings)
    kafka = kafka_for(settings)
    lines = (_MODEL / "sample_prompts.jsonl").read_text().splitlines()
    samples = [json.loads(line) for line in lines if line.strip()][:40]
    reqs = [
        RouteRequest(user_id="u-real", conversation_id=f"c-real-{i}", tools=s.get("tools") or [],
                     messages=[ChatMessage(**m) for m in s["messages"]])
        for i, s in enumerate(samples)
    ]
    scorer = Scorer.load()
    direct = {
        req.id: score for req, score in zip(
            reqs, scorer.score([render(r, turn=1) for r in reqs]), strict=True)
    }
    policy = RoutePolicy.from_settings(settings)
    async with running(build_app(settings)):  # the shipped model, loaded by the factory
        await kafka.produce_many(
            [(settings.topics.requests, encode(r), r.conversation_id.encode()) for r in reqs]
        )
        records = await kafka.consume(tier_topics(settings), len(reqs), timeout_s=90)
    assert sorted(decode(ScoredRequest, r.value).request.id for r in records) == sorted(direct)
    for rec in records:
        scored = decode(ScoredRequest, rec.value)
        assert rec.topic == settings.topics.tier(scored.tier)
        assert set(scored.probabilities) == {"simple", "general", "reasoning", "code", "agent"}
        # The int8 model's scores depend a little on the batch (dynamic quantisation scales
        # over the padded batch), so the router's batch and this one agree only roughly.
        assert scored.score == pytest.approx(direct[scored.request.id].complexity, abs=0.1)
        recorded = fake_score(scored.score, scored.category, scored.confidence)
        decision = policy.route(scored.request, recorded, scored.features, now=time.time())
        assert (decision.tier, decision.reason) == (scored.tier, scored.reason)


async def test_python_m_streams_routes_and_stops_on_sigterm(
    router_settings: Callable[..., Settings], kafka_for: Callable[[Settings], Kafka],
    tmp_path: Path,
) -> None:
    settings = router_settings()
    await create_all(settings)
    kafka = kafka_for(settings)
    config = tmp_path / "router.yaml"
    config.write_text(json.dumps(settings.model_dump(
        mode="json", include={"kafka", "topics", "router"})))  # JSON is YAML
    env = {**os.environ, "LLM_ROUTER_CONFIG": str(config), "LLM_ROUTER_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams", env=env, cwd=_ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        req = request("What are your store hours?")
        await kafka.produce(settings.topics.requests, encode(req), key=req.conversation_id.encode())
        [rec] = await kafka.consume(tier_topics(settings), 1, timeout_s=120)
        assert decode(ScoredRequest, rec.value).request.id == req.id
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert b"What are your store hours" not in stderr  # prompts are not logged
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
