"""Unit tests of the worker's pure parts: validation, error mapping, timeouts, offsets."""

from __future__ import annotations

import email.utils
from datetime import timedelta

import httpx
import pytest

import workers
from schemas.errors import (
    InvalidOutput,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from schemas.messages import ChatMessage, FormatSpec, RouteRequest, utcnow
from schemas.settings import TierSettings, ValidationSettings
from workers import (
    CHECKS,
    OffsetTracker,
    RecentIds,
    call_timeout_s,
    httpx_timeout,
    map_http_error,
    parse_retry_after,
    remaining_s,
    tier_timeout_s,
    validate_answer,
)


def test_public_names() -> None:
    assert workers.__all__ == sorted(workers.__all__)
    assert {"TierWorker", "run_worker", "OpenAIProvider", "AnthropicProvider", "Provider",
            "make_provider", "validate_answer", "map_http_error"} <= set(workers.__all__)


# -- validation ------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def request_for(fmt: FormatSpec | None = None, prompt: str = "What are your store hours?"):
    return RouteRequest(
        user_id="u", conversation_id="c",
        messages=[ChatMessage(role="user", content=prompt)], format=fmt or FormatSpec(),
    )


VALIDATION_CASES = [
    # (id, content, finish_reason, format, failing check or None)
    ("ok", "We open at 9am.", "stop", None, None),
    ("empty", "", "stop", None, "empty"),
    ("whitespace", "  \n\t ", "stop", None, "empty"),
    ("truncated", "We open at", "length", None, "truncated"),
    ("json ok", '{"answer": "9am"}', "stop", FormatSpec(kind="json"), None),
    ("json list ok", "[1, 2]", "stop", FormatSpec(kind="json"), None),
    ("not json", "Sure! 9am.", "stop", FormatSpec(kind="json"), "format"),
    ("fenced json", '```json\n{"a": 1}\n```', "stop", FormatSpec(kind="json"), "format"),
    ("schema ok", '{"answer": "9am", "confidence": 0.9}', "stop",
     FormatSpec(kind="json_schema", json_schema=SCHEMA), None),
    ("schema missing field", '{"confidence": 0.9}', "stop",
     FormatSpec(kind="json_schema", json_schema=SCHEMA), "format"),
    ("schema wrong type", '{"answer": 9}', "stop",
     FormatSpec(kind="json_schema", json_schema=SCHEMA), "format"),
    ("schema not json", "nine", "stop",
     FormatSpec(kind="json_schema", json_schema=SCHEMA), "format"),
    ("max_chars ok", "x" * 10, "stop", FormatSpec(max_chars=10), None),
    ("max_chars over", "x" * 11, "stop", FormatSpec(max_chars=10), "max_chars"),
    ("refusal", "I'm sorry, but I can't help with that.", "stop", None, "refusal"),
    ("refusal 2", "I cannot assist with this request.", "stop", None, "refusal"),
    ("as an ai", "As an AI language model, I cannot browse.", "stop", None, "refusal"),
    ("refusal deep inside is fine", "Step one. " * 40 + "I can't help noticing it.", "stop",
     None, None),
    ("hedging", "I'm not sure, but maybe 9am.", "stop", None, "hedging"),
    ("hedging 2", "I don't know the hours.", "stop", None, "hedging"),
    ("over explanation", "word " * 2000, "stop", None, "over_explanation"),
    ("long but warranted", "word " * 2000, "stop", None, None),
    ("truncated beats format", '{"answer": "9', "length", FormatSpec(kind="json"), "truncated"),
]


@pytest.mark.parametrize(
    ("content", "finish", "fmt", "check"),
    [c[1:] for c in VALIDATION_CASES],
    ids=[c[0] for c in VALIDATION_CASES],
)
def test_validate_answer(content, finish, fmt, check, request: pytest.FixtureRequest) -> None:
    prompt = "What are your store hours?"
    if request.node.callspec.id == "long but warranted":
        prompt = "Explain in detail " + "x" * 400  # 10,000 chars < 40 x 418
    route = request_for(fmt, prompt)
    if check is None:
        validate_answer(content, finish, route, ValidationSettings())
    else:
        with pytest.raises(InvalidOutput) as info:
            validate_answer(content, finish, route, ValidationSettings())
        assert info.value.check == check


@pytest.mark.parametrize("name", [name for name, _ in CHECKS])
def test_each_check_can_be_switched_off(name: str) -> None:
    failing = {
        "empty": ("", "stop", None),
        "truncated": ("We open", "length", None),
        "format": ("prose", "stop", FormatSpec(kind="json")),
        "max_chars": ("x" * 20, "stop", FormatSpec(max_chars=5)),
        "refusal": ("I cannot help with that.", "stop", None),
        "hedging": ("I'm not sure.", "stop", None),
        "over_explanation": ("y" * 5000, "stop", None),
    }[name]
    content, finish, fmt = failing
    with pytest.raises(InvalidOutput) as info:
        validate_answer(content, finish, request_for(fmt), ValidationSettings())
    assert info.value.check == name
    off = ValidationSettings(**{name: False})
    try:
        validate_answer(content, finish, request_for(fmt), off)
    except InvalidOutput as exc:  # another check may still fail; never the one switched off
        assert exc.check != name


def test_invalid_json_schema_in_request_is_reported() -> None:
    fmt = FormatSpec(kind="json_schema", json_schema={"type": "no-such-type"})
    with pytest.raises(InvalidOutput, match="JSON Schema is invalid") as info:
        validate_answer('{"a": 1}', "stop", request_for(fmt), ValidationSettings())
    assert info.value.check == "format"


# -- error mapping and Retry-After -----------------------------------------------------------


def response(
    status: int, headers: dict[str, str] | None = None, body: bytes = b""
) -> httpx.Response:
    return httpx.Response(
        status, headers=headers, content=body,
        request=httpx.Request("POST", "http://model.local/v1/chat/completions"),
    )


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retriable"),
    [
        (429, {"retry-after": "7"}, UpstreamRateLimited, True),
        (408, {}, UpstreamTimeout, True),
        (500, {}, UpstreamUnavailable, True),
        (503, {}, UpstreamUnavailable, True),
        (529, {}, UpstreamUnavailable, True),
        (400, {}, UpstreamRejected, False),
        (401, {}, UpstreamRejected, False),
        (404, {}, UpstreamRejected, False),
        (302, {}, UpstreamMalformed, False),
    ],
)
def test_map_http_error_statuses(status, headers, kind, retriable) -> None:
    error = map_http_error(response(status, headers, b'{"error": {"message": "nope"}}'))
    assert type(error) is kind
    assert error.retriable is retriable
    assert error.status == status
    assert str(status) in str(error) and "nope" in str(error)


def test_rate_limited_carries_retry_after() -> None:
    error = map_http_error(response(429, {"retry-after": "7"}))
    assert isinstance(error, UpstreamRateLimited) and error.retry_after_s == 7.0
    error = map_http_error(response(429, {"retry-after-ms": "1500", "retry-after": "9"}))
    assert isinstance(error, UpstreamRateLimited) and error.retry_after_s == 1.5
    error = map_http_error(response(429))
    assert isinstance(error, UpstreamRateLimited) and error.retry_after_s is None
    assert error.cause == "rate_limited"


def test_error_body_excerpt_is_bounded() -> None:
    error = map_http_error(response(500, body=b"x" * 10_000))
    assert len(str(error)) < 400


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ReadTimeout("slow"), UpstreamTimeout),
        (httpx.ConnectTimeout("slow"), UpstreamTimeout),
        (httpx.PoolTimeout("full"), UpstreamTimeout),
        (TimeoutError(), UpstreamTimeout),
        (httpx.ConnectError("refused"), UpstreamUnavailable),
        (httpx.ReadError("reset"), UpstreamUnavailable),
        (httpx.RemoteProtocolError("closed"), UpstreamUnavailable),
        (httpx.DecodingError("gzip"), UpstreamMalformed),
        (httpx.UnsupportedProtocol("ftp"), UpstreamError),
        (ConnectionResetError(), UpstreamUnavailable),
    ],
)
def test_map_http_error_exceptions(exc: BaseException, kind: type[UpstreamError]) -> None:
    error = map_http_error(exc)
    assert type(error) is kind


def test_map_http_error_passes_project_errors_through() -> None:
    original = UpstreamRejected("bad", status=400)
    assert map_http_error(original) is original


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00", None),  # a date without its GMT zone is not RFC 9110
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


# -- timeouts --------------------------------------------------------------------------------


def test_tier_timeout_unscaled_by_default() -> None:
    tier = TierSettings(timeout_s=2.0)
    assert tier_timeout_s(tier, 0.0) == tier_timeout_s(tier, 1.0) == 2.0


@pytest.mark.parametrize(
    ("score", "expected"), [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (-1.0, 1.0), (2.0, 2.0)]
)
def test_tier_timeout_scaled_by_score(score: float, expected: float) -> None:
    tier = TierSettings(timeout_s=2.0, scale_timeout_by_score=True, score_timeout_floor=0.5)
    assert tier_timeout_s(tier, score) == pytest.approx(expected)


def test_call_timeout_capped_by_deadline() -> None:
    tier = TierSettings(timeout_s=5.0)
    assert call_timeout_s(tier, 0.5, None) == 5.0
    assert call_timeout_s(tier, 0.5, 1.25) == 1.25
    assert call_timeout_s(tier, 0.5, 9.0) == 5.0
    assert call_timeout_s(tier, 0.5, -2.0) == 0.0


def test_remaining_and_httpx_timeout() -> None:
    now = utcnow()
    assert remaining_s(None) is None
    assert remaining_s(now + timedelta(seconds=3), now) == pytest.approx(3.0)
    assert remaining_s(now - timedelta(seconds=1), now) == pytest.approx(-1.0)
    timeout = httpx_timeout(TierSettings(connect_timeout_s=1.0), 0.3)
    assert timeout.connect == 0.3 and timeout.read == 0.3 and timeout.pool == 0.3
    timeout = httpx_timeout(TierSettings(connect_timeout_s=1.0), 4.0)
    assert timeout.connect == 1.0 and timeout.read == 4.0


# -- offsets and recent ids ------------------------------------------------------------------


def test_offset_tracker_never_skips_a_pending_offset() -> None:
    tracker = OffsetTracker()
    assert tracker.committable() is None
    for offset in (10, 11, 12, 13):
        tracker.add(offset)
    assert tracker.committable() == 10
    tracker.done(12)
    tracker.done(11)
    assert tracker.committable() == 10
    tracker.done(10)
    assert tracker.committable() == 13
    tracker.done(13)
    assert tracker.committable() == 14 and tracker.in_flight == 0
    tracker.add(20)  # a gap in offsets (compaction, transactions markers) is fine
    assert tracker.committable() == 20
    tracker.done(20)
    assert tracker.committable() == 21


def test_recent_ids_is_bounded() -> None:
    recent = RecentIds(3)
    for key in "abcd":
        recent.add(key)
    assert "a" not in recent and {"b", "c", "d"} <= {k for k in "abcd" if k in recent}
    assert len(recent) == 3
    recent.add("b")  # refreshed: now the newest
    recent.add("e")
    assert "b" in recent and "c" not in recent
    disabled = RecentIds(0)
    disabled.add("x")
    assert "x" not in disabled
