"""Providers against the real local model server: each API, each failure, over real TCP."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from pydantic import SecretStr
from worker_helpers import scored_request

from schemas.errors import (
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from schemas.messages import ChatMessage, FormatSpec, RouteRequest, ScoredRequest
from schemas.settings import TierSettings
from workers import AnthropicProvider, MetricsServer, OpenAIProvider, WorkerMetrics, make_provider
from workers.testing import Behaviour, ModelServer

TIMEOUT = httpx.Timeout(2.0)


@pytest.fixture(params=["aiohttp", "httpx"])
def http_client(request: pytest.FixtureRequest) -> str:
    """Both connection pools under the httpx client must map failures the same way."""
    return str(request.param)


def tier(server: ModelServer, provider: str = "openai", **values) -> TierSettings:
    return TierSettings(provider=provider, base_url=server.url, model="m", **values)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_ok_answer_with_usage(model_server: ModelServer, api: str, http_client: str) -> None:
    settings = tier(
        model_server, api, api_key=SecretStr("sk-test-123"), max_output_tokens=50,
        http_client=http_client,
    )
    async with make_provider(settings) as provider:
        assert isinstance(provider, OpenAIProvider if api == "openai" else AnthropicProvider)
        completion = await asyncio.wait_for(
            provider.complete(scored_request(max_output_tokens=500), "pinned", TIMEOUT), 5
        )
    assert completion.content.startswith("Our support team")
    assert completion.finish_reason == "stop"
    assert completion.input_tokens > 0 and completion.output_tokens > 0
    seen = model_server.received[-1]
    assert seen.api == api and seen.model == "pinned"
    assert seen.body["max_tokens"] == 50  # the request's 500 capped by the tier's 50
    if api == "openai":
        assert seen.headers["Authorization"] == "Bearer sk-test-123"
    else:
        assert seen.headers["x-api-key"] == "sk-test-123"
        assert seen.headers["anthropic-version"]
    assert "sk-test-123" not in repr(provider)


async def test_anthropic_system_prompt_and_truncation(model_server: ModelServer) -> None:
    request = RouteRequest(
        user_id="u", conversation_id="c",
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hours?"),
        ],
    )
    scored = ScoredRequest(request=request, score=0.1, category="faq", tier="t", reason="score")
    model_server.behaviour = Behaviour.truncated()
    async with make_provider(tier(model_server, "anthropic")) as provider:
        completion = await asyncio.wait_for(provider.complete(scored, "m", TIMEOUT), 5)
    body = model_server.received[-1].body
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "Hours?"}]
    assert completion.finish_reason == "length"  # Anthropic's max_tokens, in one vocabulary


async def test_openai_asks_for_json_when_the_format_is_json(model_server: ModelServer) -> None:
    scored = scored_request(format=FormatSpec(kind="json"))
    async with make_provider(tier(model_server)) as provider:
        completion = await asyncio.wait_for(provider.complete(scored, "m", TIMEOUT), 5)
    assert model_server.received[-1].body["response_format"] == {"type": "json_object"}
    assert completion.content == '{"answer": "ok"}'


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("behaviour", "error", "status"),
    [
        (Behaviour.fail(429, retry_after="3"), UpstreamRateLimited, 429),
        (Behaviour.fail(500), UpstreamUnavailable, 500),
        (Behaviour.fail(529), UpstreamUnavailable, 529),
        (Behaviour.fail(400), UpstreamRejected, 400),
        (Behaviour.malformed(), UpstreamMalformed, 200),
    ],
    ids=["429", "500", "529", "400", "malformed"],
)
async def test_failures_map_to_the_hierarchy(
    model_server: ModelServer,
    api: str,
    behaviour: Behaviour,
    error: type,
    status: int,
    http_client: str,
) -> None:
    model_server.behaviour = behaviour
    async with make_provider(tier(model_server, api, http_client=http_client)) as provider:
        with pytest.raises(error) as info:
            await asyncio.wait_for(provider.complete(scored_request(), "m", TIMEOUT), 5)
    assert info.value.status == status
    if status == 429:
        assert info.value.retry_after_s == 3.0


async def test_slow_server_times_out(model_server: ModelServer, http_client: str) -> None:
    model_server.behaviour = Behaviour.slow(2.0)
    async with make_provider(tier(model_server, http_client=http_client)) as provider:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(
                provider.complete(scored_request(), "m", httpx.Timeout(0.2)), 5
            )
        assert loop.time() - started < 1.0


async def test_connection_refused_is_unavailable(http_client: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = TierSettings(base_url=f"http://127.0.0.1:{port}/v1", http_client=http_client)
    async with make_provider(settings) as provider:
        with pytest.raises(UpstreamUnavailable):
            await asyncio.wait_for(provider.complete(scored_request(), "m", TIMEOUT), 5)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"", UpstreamUnavailable),  # reads the request, closes without a word
        (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"choices\"", UpstreamUnavailable),
        (b"NOT HTTP AT ALL\r\n\r\n", UpstreamUnavailable),
    ],
    ids=["closed", "short-body", "garbage"],
)
async def test_broken_connections_map_to_the_hierarchy(
    http_client: str, reply: bytes, error: type
) -> None:
    """A raw TCP server that answers badly: every backend names the failure the same way."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = TierSettings(base_url=f"http://127.0.0.1:{port}/v1", http_client=http_client)
    try:
        async with make_provider(settings) as provider:
            with pytest.raises(error):
                await asyncio.wait_for(provider.complete(scored_request(), "m", TIMEOUT), 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_provider_lifecycle_is_idempotent(model_server: ModelServer) -> None:
    provider = make_provider(tier(model_server))
    with pytest.raises(RuntimeError, match="not started"):
        await provider.complete(scored_request(), "m", TIMEOUT)
    await provider.start()
    await provider.start()
    await provider.stop()
    await provider.stop()


def test_model_server_script_model_rules_and_mix() -> None:
    with ModelServer() as server:
        server.script(Behaviour.fail(500), Behaviour.empty())
        server.for_model("special", Behaviour.fail(418), Behaviour.refusal())

        def call(model: str) -> httpx.Response:
            return httpx.post(
                f"{server.url}/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                timeout=5,
            )

        assert call("m").status_code == 500
        assert call("m").json()["choices"][0]["message"]["content"] == ""
        assert call("m").status_code == 200
        assert call("special").status_code == 418
        for _ in range(2):  # the last behaviour of a model repeats
            content = call("special").json()["choices"][0]["message"]["content"]
            assert content.startswith("I'm sorry")
        server.mix({Behaviour.fail(503): 1.0, Behaviour.ok(): 1.0}, seed=1)
        statuses = {call("m").status_code for _ in range(30)}
        assert statuses == {200, 503}
        assert server.requests == 36 and server.in_flight == 0
        server.reset()
        assert server.requests == 0 and call("special").status_code == 200


async def test_metrics_server_serves_metrics_and_health() -> None:
    metrics = WorkerMetrics("fast", "w-1")
    metrics.call("m", "ok", 0.1, input_tokens=10, output_tokens=5, cost_usd=0.002)
    healthy = {"value": True}
    server = MetricsServer(metrics, lambda: (healthy["value"], {"tier": "fast"}),
                           host="127.0.0.1")
    async with server:
        async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            text = (await asyncio.wait_for(client.get("/metrics"), 5)).text
            assert 'llm_router_worker_calls_total{model="m",outcome="ok",tier="fast"} 1.0' in text
            assert "llm_router_worker_tokens_total" in text
            assert "llm_router_worker_cost_usd_total" in text
            ok = await asyncio.wait_for(client.get("/healthz"), 5)
            assert ok.status_code == 200 and ok.json()["status"] == "ok"
            healthy["value"] = False
            down = await asyncio.wait_for(client.get("/healthz"), 5)
            assert down.status_code == 503 and down.json()["tier"] == "fast"
    await server.stop()
