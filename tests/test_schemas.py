"""Message models: round trips, limits and the errors producers see."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas import (
    MESSAGE_MODELS,
    Attempt,
    ChatMessage,
    DeadLetter,
    RouteInfo,
    RouteRequest,
    RouteResponse,
    SchemaError,
    ScoredRequest,
    UpRouteEvent,
    Usage,
    decode,
    encode,
    export_json_schemas,
)


def make_request(**overrides: object) -> RouteRequest:
    fields: dict[str, object] = {
        "user_id": "user-1",
        "conversation_id": "conv-1",
        "messages": [ChatMessage(role="user", content="What are your store hours?")],
    }
    fields.update(overrides)
    return RouteRequest(**fields)  # type: ignore[arg-type]


def sample_messages() -> list[object]:
    request = make_request(
        turn=3,
        forced_tier="balanced",
        format={"kind": "json_schema", "json_schema": {"type": "object"}, "max_chars": 500},
        deadline=datetime.now(UTC) + timedelta(seconds=30),
        metadata={"source": "test"},
        tools=[{"type": "function", "function": {"name": "lookup_order"}}],
    )
    attempt = Attempt(
        tier="fast", model="m", outcome="timeout", error_kind="UpstreamTimeout", latency_ms=501.2
    )
    scored = ScoredRequest(
        request=request, score=0.42, category="general", probabilities={"general": 0.8},
        confidence=0.8, tier="balanced", reason="forced", attempts=[attempt],
    )
    response = RouteResponse(
        request_id=request.id, conversation_id="conv-1", user_id="user-1", content="{}",
        usage=Usage(input_tokens=10, output_tokens=2), cost_usd=0.0001,
        route=RouteInfo(
            tier="balanced", model="m2", category="general", score=0.42, reason="forced",
            tiers_tried=["fast", "balanced"], attempts=[attempt], total_latency_ms=700.0,
        ),
    )
    uproute = UpRouteEvent(scored=scored, cause="invalid_output", detail="json", output="nope")
    dead = DeadLetter(
        stage="ingest", error_kind="not_json", error="bad", original=b"\xff\x00 not json",
        source_topic="llm.requests", source_partition=0, source_offset=7,
    )
    return [request, scored, response, uproute, dead]


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    model = type(message)
    data = encode(message)  # type: ignore[arg-type]
    assert decode(model, data) == message  # type: ignore[type-var]


def test_dead_letter_keeps_original_bytes_verbatim() -> None:
    raw = bytes(range(256))
    dead = DeadLetter(stage="ingest", error_kind="not_json", error="x", original=raw)
    assert decode(DeadLetter, encode(dead)).original == raw


def test_usage_total() -> None:
    assert Usage(input_tokens=3, output_tokens=4).total_tokens == 7


@pytest.mark.parametrize(
    ("payload", "kind", "needle"),
    [
        (b"\xff\xfe", "not_json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "invalid", "expected a JSON object"),
        (b'{"schema_version": 99}', "unknown_version", "unknown schema_version 99"),
        (b'{"user_id": "u", "conversation_id": "c"}', "invalid", "messages: Field required"),
        (
            b'{"user_id": "u", "conversation_id": "c", "messages": [{"role": "user", '
            b'"content": 5}]}',
            "invalid",
            "messages.0.content",
        ),
        (
            b'{"user_id": "has space", "conversation_id": "c", "messages": '
            b'[{"role": "user", "content": "hi"}]}',
            "invalid",
            "user_id",
        ),
        (
            b'{"user_id": "u", "conversation_id": "c", "messages": '
            b'[{"role": "system", "content": "hi"}]}',
            "invalid",
            "at least one 'user' message",
        ),
        (
            b'{"user_id": "u", "conversation_id": "c", "turn": 0, "messages": '
            b'[{"role": "user", "content": "hi"}]}',
            "invalid",
            "turn",
        ),
        (
            b'{"user_id": "u", "conversation_id": "c", "colour": "red", "messages": '
            b'[{"role": "user", "content": "hi"}]}',
            "invalid",
            "colour: Extra inputs are not permitted",
        ),
        (
            b'{"user_id": "u", "conversation_id": "c", "format": {"kind": "json_schema"}, '
            b'"messages": [{"role": "user", "content": "hi"}]}',
            "invalid",
            "needs a 'json_schema'",
        ),
    ],
)
def test_rejections_say_what_is_wrong(payload: bytes, kind: str, needle: str) -> None:
    with pytest.raises(SchemaError) as caught:
        decode(RouteRequest, payload)
    assert caught.value.kind == kind
    assert needle in str(caught.value)


def test_oversized_message_is_rejected_before_parsing() -> None:
    data = encode(make_request(messages=[ChatMessage(role="user", content="x" * 5000)]))
    with pytest.raises(SchemaError) as caught:
        decode(RouteRequest, data, max_bytes=1024)
    assert caught.value.kind == "too_large"
    assert str(len(data)) in str(caught.value)


def test_field_limits() -> None:
    with pytest.raises(ValueError, match="at most 256"):
        make_request(messages=[ChatMessage(role="user", content="x")] * 257)
    with pytest.raises(ValueError, match="at most 200000"):
        ChatMessage(role="user", content="x" * 200_001)


def test_naive_deadline_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        make_request(deadline=datetime(2030, 1, 1))


def test_prompt_text_is_last_user_message() -> None:
    request = make_request(
        messages=[
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="user", content="first"),
            ChatMessage(role="assistant", content="ok"),
            ChatMessage(role="user", content="second"),
        ]
    )
    assert request.prompt_text() == "second"


def test_json_schema_export(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    paths = export_json_schemas(tmp_path)
    assert {p.name for p in paths} == {f"{n}.schema.json" for n in MESSAGE_MODELS}
    for path in paths:
        schema = json.loads(path.read_text())
        assert schema["type"] == "object"
        assert "schema_version" in schema["properties"]
    request_schema = json.loads((tmp_path / "RouteRequest.schema.json").read_text())
    assert set(request_schema["required"]) >= {"user_id", "conversation_id", "messages"}


def test_exported_schema_validates_real_messages(tmp_path: object) -> None:
    from pathlib import Path

    import jsonschema

    assert isinstance(tmp_path, Path)
    export_json_schemas(tmp_path)
    for message in sample_messages():
        name = type(message).__name__
        schema = json.loads((tmp_path / f"{name}.schema.json").read_text())
        jsonschema.validate(json.loads(encode(message)), schema)  # type: ignore[arg-type]
