"""``llm-router deadletter replay`` against the real session broker, and its planning rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from typer.testing import CliRunner

from deploy.admin import create_topics, kafka_client_kwargs
from deploy.cli import State
from deploy.replay import (
    REPLAY_HEADER,
    REPLAY_OF_METADATA,
    ReplayError,
    ReplayFilter,
    deadletter_replay,
    parse_since,
    plan_replay,
    replay_dead_letters,
    topic_partitions,
)
from schemas.codec import decode, encode
from schemas.messages import (
    Attempt,
    ChatMessage,
    DeadLetter,
    RouteRequest,
    ScoredRequest,
    UpRouteEvent,
)
from schemas.settings import Settings

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
WAIT_S = 30.0


def _request(request_id: str, *, deadline: datetime | None = None) -> RouteRequest:
    return RouteRequest(
        id=request_id,
        user_id="u-1",
        conversation_id=f"c-{request_id}",
        messages=[ChatMessage(role="user", content="What are your store hours?")],
        deadline=deadline,
    )


def _scored(request: RouteRequest, tiers: tuple[str, ...]) -> ScoredRequest:
    attempts = [Attempt(tier=t, model=f"m-{t}", outcome="timeout") for t in tiers]
    return ScoredRequest(
        request=request, score=0.42, category="simple", tier=tiers[-1], reason="score",
        attempts=attempts,
    )


def _letters() -> list[DeadLetter]:
    past = datetime.now(UTC) - timedelta(hours=1)
    worker_scored = _scored(_request("r-worker", deadline=past), ("fast", "balanced"))
    up_scored = _scored(_request("r-up"), ("fast", "balanced", "frontier"))
    return [
        DeadLetter(
            stage="ingest", error_kind="not_json", error="bad", original=b'{"broken": ',
            source_topic="llm.requests", source_key="c-ingest",
        ),
        DeadLetter(
            stage="worker", error_kind="deadline_exceeded", error="deadline passed",
            original=encode(worker_scored), request_id="r-worker",
            conversation_id="c-r-worker", source_key="c-r-worker",
            attempts=worker_scored.attempts,
        ),
        DeadLetter(
            stage="uproute", error_kind="timeout", error="chain exhausted",
            original=encode(UpRouteEvent(scored=up_scored, cause="timeout")),
            request_id="r-up", conversation_id="c-r-up", attempts=up_scored.attempts,
        ),
        DeadLetter(
            stage="worker", error_kind="not_json", error="undecodable", original=b"garbage",
        ),
    ]


async def _seed(settings: Settings) -> None:
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings.kafka), acks="all")
    await producer.start()
    try:
        for letter in _letters():
            await producer.send_and_wait(
                settings.topics.deadletter, encode(letter),
                key=(letter.request_id or letter.source_key or "k").encode(),
                headers=[("traceparent", TRACEPARENT)],
            )
    finally:
        await producer.stop()


async def _read_all(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topic`` now."""
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings.kafka), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = await topic_partitions(settings, topic)
        assert partitions, f"{topic} has no partitions"
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        end = await consumer.end_offsets(assigned)
        records: list[ConsumerRecord[bytes, bytes]] = []

        async def drain() -> None:
            while any([await consumer.position(tp) < end[tp] for tp in assigned]):
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)

        await asyncio.wait_for(drain(), WAIT_S)
        return records
    finally:
        await consumer.stop()


@pytest.mark.integration
async def test_replay_republishes_each_stage_to_the_right_topic(
    make_settings: Callable[..., Settings], created_topics: object
) -> None:
    settings = make_settings()
    await asyncio.wait_for(_seed(settings), WAIT_S)

    actions = await asyncio.wait_for(replay_dead_letters(settings), WAIT_S)

    assert [a.stage for a in actions if a.skipped] == ["worker"]
    assert sorted(a.error_kind for a in actions if not a.skipped) == [
        "deadline_exceeded", "not_json", "timeout",
    ]
    replayed = await _read_all(settings, settings.topics.requests)
    assert len(replayed) == 3
    for record in replayed:
        headers = dict(record.headers)
        assert headers["traceparent"] == TRACEPARENT
        assert headers[REPLAY_HEADER].decode().startswith(f"{settings.topics.deadletter}:")
    by_key = {r.key: r for r in replayed}
    # Ingest stage: the original bytes, untouched, under the original key.
    assert by_key[b"c-ingest"].value == b'{"broken": '
    # Up-route and worker stages: the request inside, with a new id, no deadline.
    for original_id in ("r-worker", "r-up"):
        request = decode(RouteRequest, by_key[f"c-{original_id}".encode()].value)
        assert request.id != original_id
        assert request.metadata[REPLAY_OF_METADATA] == original_id
        assert request.deadline is None
    # Nothing went to the tier topics.
    assert await _read_all(settings, settings.topics.tier("fast")) == []


@pytest.mark.integration
async def test_replay_to_tier_with_filters_and_dry_run(
    make_settings: Callable[..., Settings], created_topics: object
) -> None:
    settings = make_settings()
    await asyncio.wait_for(_seed(settings), WAIT_S)

    dry = await asyncio.wait_for(
        replay_dead_letters(
            settings, ReplayFilter(stages=frozenset({"uproute", "worker"})), dry_run=True
        ),
        WAIT_S,
    )
    assert len(dry) == 3
    assert await _read_all(settings, settings.topics.requests) == []

    future = ReplayFilter(since=datetime.now(UTC) + timedelta(hours=1))
    assert await asyncio.wait_for(replay_dead_letters(settings, future), WAIT_S) == []

    actions = await asyncio.wait_for(
        replay_dead_letters(
            settings,
            ReplayFilter(request_ids=frozenset({"r-up"}), limit=5),
            to_tier="balanced",
            new_request_id=False,
        ),
        WAIT_S,
    )
    assert [a.topic for a in actions] == [settings.topics.tier("balanced")]
    (record,) = await _read_all(settings, settings.topics.tier("balanced"))
    scored = decode(ScoredRequest, record.value)
    assert scored.request.id == "r-up"
    assert scored.tier == "balanced"
    assert scored.reason == "forced"
    assert scored.attempts == []
    assert scored.category == "simple"
    assert record.key == b"c-r-up"

    with pytest.raises(ReplayError, match="not in the chain"):
        await replay_dead_letters(settings, to_tier="nope")


@pytest.mark.integration
def test_cli_prints_what_it_did(kafka_settings: object, unique_topics: object) -> None:
    settings = Settings(kafka=kafka_settings, topics=unique_topics)
    asyncio.run(
        asyncio.wait_for(create_topics(settings.kafka, settings.topics, settings.chain), WAIT_S)
    )
    asyncio.run(asyncio.wait_for(_seed(settings), WAIT_S))

    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = State(None, settings)

    app.command("replay")(deadletter_replay)
    result = CliRunner().invoke(
        app, ["replay", "--error-kind", "deadline_exceeded", "--error-kind", "not_json",
              "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == "would replay 2, skipped 1 of 3 matching (dry run: nothing was published)"
    assert any(line.startswith("dry-run") and "r-worker" in line for line in lines)
    assert any(line.startswith("skip") and "original holds no request" in line for line in lines)
    assert asyncio.run(_read_all(settings, settings.topics.requests)) == []

    bad = CliRunner().invoke(app, ["replay", "--stage", "nowhere"])
    assert bad.exit_code != 0
    assert "unknown stage" in bad.output


def test_plan_ingest_letter_refuses_to_tier() -> None:
    settings = Settings.model_validate({})
    letter = _letters()[0]
    action = plan_replay(letter, settings, source="llm.deadletter:0:7", to_tier="frontier")
    assert action.skipped
    assert "--to-tier needs a scored request" in action.describe()
    plain = plan_replay(letter, settings, source="llm.deadletter:0:7")
    assert plain.topic == "llm.requests"
    assert plain.value == letter.original
    assert (REPLAY_HEADER, b"llm.deadletter:0:7") in plain.headers


def test_plan_keeps_deadline_and_id_on_request() -> None:
    settings = Settings.model_validate({})
    letter = _letters()[1]
    action = plan_replay(letter, settings, new_request_id=False, keep_deadline=True)
    request = decode(RouteRequest, action.value)
    assert request.id == "r-worker"
    assert request.deadline is not None
    assert REPLAY_OF_METADATA not in request.metadata


def test_parse_since() -> None:
    now = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("2025-01-30T00:00:00Z") == datetime(2025, 1, 30, tzinfo=UTC)
    assert parse_since("2025-01-30T00:00:00").tzinfo is UTC
    with pytest.raises(ReplayError):
        parse_since("yesterday")
