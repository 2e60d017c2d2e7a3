"""The tier worker against the real broker and real local model servers.

Every outcome path, deadlines, backpressure, graceful shutdown, a SIGKILLed worker and two
worker processes of one tier. Waits are bounded with ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from worker_helpers import (
    produce,
    produce_scored,
    read_topic,
    scored_request,
    start_worker_process,
)

from schemas.codec import decode, encode
from schemas.messages import Attempt, DeadLetter, FormatSpec, RouteResponse, UpRouteEvent, utcnow
from schemas.settings import Settings
from workers import TierWorker
from workers.testing import Behaviour, ModelServer

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


def by_request_id(records, model):
    out: dict[str, list] = collections.defaultdict(list)
    for record in records:
        message = decode(model, record.value)
        out[message.request_id].append((record, message))
    return out


async def test_every_outcome_path(
    worker_settings: Callable[..., Settings], model_server: ModelServer
) -> None:
    """One worker, one request per outcome; each request pins a model the server fails for."""
    settings = worker_settings()
    kafka, topics = settings.kafka, settings.topics
    model_server.for_model("m-slow", Behaviour.slow(3.0))
    model_server.for_model("m-429", Behaviour.fail(429, retry_after="7"))
    model_server.for_model("m-500", Behaviour.fail(500))
    model_server.for_model("m-400", Behaviour.fail(400))
    model_server.for_model("m-malformed", Behaviour.malformed())
    model_server.for_model("m-empty", Behaviour.empty())
    model_server.for_model("m-refusal", Behaviour.refusal())
    model_server.for_model("m-prose", Behaviour.non_json())
    model_server.for_model("m-wrong-json", Behaviour.ok('{"result": 1}'))
    model_server.for_model("m-long", Behaviour.ok("x" * 100))
    model_server.for_model("m-truncated", Behaviour.truncated())
    model_server.for_model("m-deadline", Behaviour.slow(3.0))

    earlier = Attempt(tier="cheaper", model="tiny", outcome="timeout", cost_usd=0.5)
    ok = scored_request(attempts=[earlier])
    json_ok = scored_request(model="m-json", format=FormatSpec(kind="json"))
    cases = {
        "slow": scored_request(model="m-slow"),
        "429": scored_request(model="m-429"),
        "500": scored_request(model="m-500"),
        "400": scored_request(model="m-400"),
        "malformed": scored_request(model="m-malformed"),
        "empty": scored_request(model="m-empty"),
        "refusal": scored_request(model="m-refusal"),
        "non_json": scored_request(model="m-prose", format=FormatSpec(kind="json")),
        "schema": scored_request(
            model="m-wrong-json", format=FormatSpec(kind="json_schema", json_schema=SCHEMA)
        ),
        "max_chars": scored_request(model="m-long", format=FormatSpec(max_chars=50)),
        "truncated": scored_request(model="m-truncated"),
    }
    expired = scored_request(deadline=utcnow() - timedelta(seconds=1))
    undecodable = b'{"not": "a scored request"'
    headers = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]

    tier_topic = topics.tier("fast")
    await produce_scored(
        kafka, tier_topic, [ok, json_ok, *cases.values(), expired, ok], headers
    )
    await produce(kafka, tier_topic, [(b"conv-x", undecodable)])

    async with TierWorker(settings, "fast", worker_id="w-outcomes") as worker:
        responses = await read_topic(kafka, topics.responses, 2, timeout_s=30)
        # Sent once the worker consumes, so that the deadline falls during the call.
        tight = scored_request(model="m-deadline", deadline=utcnow() + timedelta(seconds=0.4))
        await produce_scored(kafka, tier_topic, [tight])
        uproutes = await read_topic(kafka, topics.uproute, len(cases), timeout_s=30)
        letters = await read_topic(kafka, topics.deadletter, 3, timeout_s=30, settle_s=0.5)
        port = worker.metrics_port
        async with httpx.AsyncClient() as client:
            health = await asyncio.wait_for(client.get(f"http://127.0.0.1:{port}/healthz"), 5)
            metrics = (
                await asyncio.wait_for(client.get(f"http://127.0.0.1:{port}/metrics"), 5)
            ).text
        assert health.status_code == 200 and health.json()["tier"] == "fast"
        assert worker.metrics.value("llm_router_worker_messages_total", result="duplicate") == 1

    # -- responses: the ok request (sent twice: answered once) and the JSON one
    answered = by_request_id(responses, RouteResponse)
    assert set(answered) == {ok.request.id, json_ok.request.id}
    assert len(answered[ok.request.id]) == 1, "a redelivered request was answered twice"
    record, response = answered[ok.request.id][0]
    assert record.key == ok.request.id.encode()
    assert dict(record.headers)["traceparent"] == headers[0][1]
    assert response.content.startswith("Our support team")
    assert response.route.tier == "fast" and response.route.model == "tier-model"
    assert response.route.tiers_tried == ["cheaper", "fast"]
    assert [a.outcome for a in response.route.attempts] == ["timeout", "ok"]
    this = response.route.attempts[-1]
    assert this.worker_id == "w-outcomes" and this.latency_ms > 0
    assert response.usage.input_tokens == this.input_tokens > 0
    assert response.usage.output_tokens == this.output_tokens > 0
    expected_cost = (this.input_tokens * 1.0 + this.output_tokens * 2.0) / 1e6
    assert this.cost_usd == pytest.approx(expected_cost)
    assert response.cost_usd == pytest.approx(0.5 + expected_cost)
    assert response.route.total_latency_ms > 0
    assert response.route.category == "faq" and response.route.reason == "score"
    assert answered[json_ok.request.id][0][1].route.model == "m-json"

    # -- up-routes: cause, check names, retry-after, the rejected answer
    events = {e.request_id: e for e in (decode(UpRouteEvent, r.value) for r in uproutes)}
    assert len(uproutes) == len(events) == len(cases)
    expected = {
        "slow": ("timeout", "UpstreamTimeout"),
        "429": ("rate_limited", "UpstreamRateLimited"),
        "500": ("upstream_error", "UpstreamUnavailable"),
        "400": ("rejected", "UpstreamRejected"),
        "malformed": ("upstream_error", "UpstreamMalformed"),
        "empty": ("invalid_output", "empty"),
        "refusal": ("invalid_output", "refusal"),
        "non_json": ("invalid_output", "format"),
        "schema": ("invalid_output", "format"),
        "max_chars": ("invalid_output", "max_chars"),
        "truncated": ("invalid_output", "truncated"),
    }
    for name, (cause, kind) in expected.items():
        event = events[cases[name].request.id]
        attempt = event.scored.attempts[-1]
        assert (event.cause, attempt.error_kind) == (cause, kind), name
        assert attempt.tier == "fast" and attempt.outcome == cause
        assert event.scored.request == cases[name].request
        if cause == "invalid_output":
            assert event.detail.startswith(f"{kind}:")
            assert event.output is not None
            assert attempt.output_tokens > 0 or name == "empty"
    assert events[cases["429"].request.id].retry_after_s == 7.0
    assert events[cases["refusal"].request.id].output.startswith("I'm sorry")
    assert events[cases["schema"].request.id].output == '{"result": 1}'
    slow_attempt = events[cases["slow"].request.id].scored.attempts[-1]
    assert 400 <= slow_attempt.latency_ms < 1500  # cut at the tier's 0.5 s

    # -- dead letters: past deadline (never called), deadline during the call, undecodable
    dead = [decode(DeadLetter, r.value) for r in letters]
    assert len(dead) == 3
    by_kind = collections.defaultdict(list)
    for letter in dead:
        by_kind[letter.error_kind].append(letter)
    deadline_letters = {d.request_id: d for d in by_kind["deadline_exceeded"]}
    expired_letter = deadline_letters[expired.request.id]
    assert expired_letter.original == encode(expired) and expired_letter.attempts == []
    assert expired_letter.source_topic == tier_topic and expired_letter.stage == "worker"
    tight_letter = deadline_letters[tight.request.id]
    assert [a.outcome for a in tight_letter.attempts] == ["deadline_exceeded"]
    assert tight_letter.tiers_tried == ["fast"]
    assert tight_letter.attempts[0].latency_ms < 450  # cut at the deadline, not the 0.5 s
    (bad,) = by_kind["not_json"]
    assert bad.original == undecodable and bad.source_key == "conv-x"
    raw_letter = next(r for r in letters if decode(DeadLetter, r.value).error_kind == "not_json")
    assert base64.b64decode(json.loads(raw_letter.value)["original"]) == undecodable
    assert model_server.requests == 2 + len(cases) + 1  # ok, json, cases, tight; expired never

    assert 'outcome="ok"' in metrics and "llm_router_worker_call_latency_seconds" in metrics
    assert 'outcome="invalid_output"' in metrics and "llm_router_worker_cost_usd_total" in metrics


async def test_anthropic_provider_end_to_end(
    worker_settings: Callable[..., Settings], model_server: ModelServer
) -> None:
    settings = worker_settings(tier={"provider": "anthropic", "api_key": "sk-ant-test"})
    model_server.for_model("m-busy", Behaviour.fail(429, retry_after="2"))
    good, busy = scored_request(), scored_request(model="m-busy")
    await produce_scored(settings.kafka, settings.topics.tier("fast"), [good, busy])
    async with TierWorker(settings, "fast"):
        (response_record,) = await read_topic(settings.kafka, settings.topics.responses, 1)
        (event_record,) = await read_topic(settings.kafka, settings.topics.uproute, 1)
    response = decode(RouteResponse, response_record.value)
    assert response.request_id == good.request.id and response.usage.output_tokens > 0
    event = decode(UpRouteEvent, event_record.value)
    assert event.cause == "rate_limited" and event.retry_after_s == 2.0
    assert {r.api for r in model_server.received} == {"anthropic"}
    assert all(r.headers["x-api-key"] == "sk-ant-test" for r in model_server.received)


async def test_retriable_errors_are_retried_in_place(
    worker_settings: Callable[..., Settings], model_server: ModelServer
) -> None:
    settings = worker_settings(tier={"max_retries": 2, "retry_backoff_ms": 20})
    model_server.for_model("m-flaky", Behaviour.fail(503), Behaviour.ok())
    model_server.for_model("m-bad", Behaviour.fail(400))
    flaky, bad = scored_request(model="m-flaky"), scored_request(model="m-bad")
    await produce_scored(settings.kafka, settings.topics.tier("fast"), [flaky, bad])
    async with TierWorker(settings, "fast"):
        (record,) = await read_topic(settings.kafka, settings.topics.responses, 1)
        (event,) = await read_topic(settings.kafka, settings.topics.uproute, 1)
    response = decode(RouteResponse, record.value)
    assert [a.outcome for a in response.route.attempts] == ["upstream_error", "ok"]
    rejected = decode(UpRouteEvent, event.value)
    assert [a.outcome for a in rejected.scored.attempts] == ["rejected"]  # 4xx: not retried
    assert model_server.requests == 3


@pytest.mark.slow
async def test_backpressure_at_the_concurrency_limit(
    worker_settings: Callable[..., Settings], model_server: ModelServer
) -> None:
    settings = worker_settings(tier={"timeout_s": 5.0})
    model_server.behaviour = Behaviour.slow(0.4)
    requests = [scored_request() for _ in range(30)]
    await produce_scored(settings.kafka, settings.topics.tier("fast"), requests)
    async with TierWorker(settings, "fast", concurrency=4) as worker:
        await model_server.wait_requests(4, timeout_s=30)
        await asyncio.sleep(0.2)
        assert worker.paused, "partitions are not paused at the concurrency limit"
        records = await read_topic(settings.kafka, settings.topics.responses, 30, timeout_s=60)
        assert worker.peak_in_flight == 4 and worker.pauses >= 1
    assert len({decode(RouteResponse, r.value).request_id for r in records}) == 30
    assert model_server.peak_in_flight == 4  # what the model saw: never more than the limit


@pytest.mark.slow
@pytest.mark.parametrize("grace_s", [5.0, 0.0], ids=["finish", "hand-back"])
async def test_graceful_stop_with_calls_in_flight(
    worker_settings: Callable[..., Settings], model_server: ModelServer, grace_s: float
) -> None:
    """stop() mid-flight: in-flight calls finish (or are handed back); a second worker answers
    the rest; every request gets its outcome and, with a grace period, exactly once."""
    settings = worker_settings(tier={"timeout_s": 5.0}, workers={"shutdown_grace_s": grace_s})
    model_server.behaviour = Behaviour.slow(0.8)
    requests = [scored_request() for _ in range(24)]
    await produce_scored(settings.kafka, settings.topics.tier("fast"), requests)
    first = TierWorker(settings, "fast", concurrency=8, worker_id="first")
    await asyncio.wait_for(first.start(), 30)
    try:
        await model_server.wait_requests(8, timeout_s=30)
        assert first.in_flight == 8
    finally:
        await asyncio.wait_for(first.stop(), 30)
    await asyncio.wait_for(first.stop(), 5)  # twice is fine
    assert first.in_flight == 0
    async with TierWorker(settings, "fast", concurrency=8, worker_id="second"):
        records = await read_topic(
            settings.kafka, settings.topics.responses, 24, timeout_s=60, settle_s=1.0
        )
    answered = collections.Counter(decode(RouteResponse, r.value).request_id for r in records)
    assert set(answered) == {r.request.id for r in requests}
    if grace_s > 0:
        assert max(answered.values()) == 1, "a request finished before stop was answered again"
        workers = collections.Counter(
            decode(RouteResponse, r.value).route.attempts[-1].worker_id for r in records
        )
        assert workers["first"] >= 8


async def wait_healthy(port: int, timeout_s: float = 60.0) -> dict:
    async def poll() -> dict:
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    body = response.json()
                    if response.status_code == 200 and body["assigned"]:
                        return body
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), timeout_s)


async def stop_process(process: asyncio.subprocess.Process, timeout_s: float = 30) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise


@pytest.mark.slow
async def test_sigterm_finishes_in_flight_calls(
    worker_settings: Callable[..., Settings], model_server: ModelServer, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    settings = worker_settings(tier={"timeout_s": 5.0})
    model_server.behaviour = Behaviour.slow(1.0)
    requests = [scored_request() for _ in range(20)]
    port = free_port()
    log = tmp_path / "worker.log"
    process = await start_worker_process(settings, log, "fast", "--concurrency", "6",
                                         metrics_port=port)
    try:
        await wait_healthy(port)
        await produce_scored(settings.kafka, settings.topics.tier("fast"), requests)
        await model_server.wait_requests(6, timeout_s=30)
    finally:
        code = await stop_process(process)
    assert code == 0, log.read_text()[-3000:]
    done_by_first = await read_topic(settings.kafka, settings.topics.responses, 6, timeout_s=10)
    assert "stopped" in log.read_text()
    async with TierWorker(settings, "fast"):
        records = await read_topic(
            settings.kafka, settings.topics.responses, 20, timeout_s=60, settle_s=1.0
        )
    answered = collections.Counter(decode(RouteResponse, r.value).request_id for r in records)
    assert set(answered) == {r.request.id for r in requests}
    assert max(answered.values()) == 1
    assert len(done_by_first) >= 6


@pytest.mark.slow
async def test_sigkilled_worker_requests_are_redelivered(
    worker_settings: Callable[..., Settings], model_server: ModelServer, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    settings = worker_settings(tier={"timeout_s": 5.0})
    model_server.behaviour = Behaviour.slow(1.0)
    requests = [scored_request() for _ in range(30)]
    port = free_port()
    log = tmp_path / "killed.log"
    process = await start_worker_process(settings, log, "fast", "--concurrency", "10",
                                         metrics_port=port)
    try:
        await wait_healthy(port)
        await produce_scored(settings.kafka, settings.topics.tier("fast"), requests)
        await model_server.wait_requests(10, timeout_s=30)
        await asyncio.sleep(0.3)
    finally:
        process.kill()
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == -signal.SIGKILL
    # The killed member is evicted after the session timeout; its partitions are redelivered.
    async with TierWorker(settings, "fast", worker_id="survivor"):
        records = await read_topic(settings.kafka, settings.topics.responses, 30, timeout_s=90)
    responses = [decode(RouteResponse, r.value) for r in records]
    answered = {r.request_id for r in responses}
    assert answered == {r.request.id for r in requests}, "a request was lost"
    # Duplicates may exist (at-least-once) but every one is a whole answer of a known request.
    assert len(responses) >= 30
    assert any(r.route.attempts[-1].worker_id == "survivor" for r in responses)


@pytest.mark.slow
async def test_two_worker_processes_share_the_partitions(
    worker_settings: Callable[..., Settings], model_server: ModelServer, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    settings = worker_settings()
    ports = [free_port(), free_port()]
    processes = [
        await start_worker_process(settings, tmp_path / f"w{i}.log", "fast", metrics_port=p)
        for i, p in enumerate(ports)
    ]
    try:
        # Both in the group with partitions of their own (3 partitions, 2 members).
        async def both_assigned() -> list[dict]:
            while True:
                bodies = [await wait_healthy(p) for p in ports]
                assigned = [set(b["assigned"]) for b in bodies]
                if all(assigned) and not assigned[0] & assigned[1]:
                    return bodies
                await asyncio.sleep(0.3)

        bodies = await asyncio.wait_for(both_assigned(), 90)
        requests = [scored_request() for _ in range(40)]
        await produce_scored(settings.kafka, settings.topics.tier("fast"), requests)
        records = await read_topic(settings.kafka, settings.topics.responses, 40, timeout_s=60)
    finally:
        codes = [await stop_process(p) for p in processes]
    assert codes == [0, 0]
    responses = [decode(RouteResponse, r.value) for r in records]
    assert {r.request_id for r in responses} == {r.request.id for r in requests}
    worker_ids = {r.route.attempts[-1].worker_id for r in responses}
    assert worker_ids == {b["worker_id"] for b in bodies}
