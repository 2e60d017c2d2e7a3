"""A real local model server for tests, fault drills and load tests.

:class:`ModelServer` serves both the OpenAI chat completions API
(``POST /v1/chat/completions``) and the Anthropic Messages API (``POST /v1/messages``) from an
aiohttp application on 127.0.0.1, in a background thread with its own event loop, so the
process under test talks to it over real TCP. What it answers is a :class:`Behaviour`, which
a test changes at any time::

    with ModelServer() as server:
        settings = Settings(tiers={"fast": {"base_url": server.url}})
        server.behaviour = Behaviour.slow(2.0)                 # every call takes 2 s
        server.behaviour = Behaviour.fail(429, retry_after="3")
        server.script(Behaviour.fail(500), Behaviour.ok())     # next two calls, then default
        server.mix({Behaviour.ok(): 0.9, Behaviour.fail(503): 0.1}, seed=7)
        server.for_model("m-429", Behaviour.fail(429))         # calls naming this model
        ...
        assert server.requests == 3 and server.peak_in_flight <= 64

Behaviours: ``ok`` (optionally with ``content`` and a delay), ``slow``, ``fail`` (any status,
optional ``Retry-After``), ``malformed`` (a 200 whose body is not JSON), ``empty``,
``refusal``, ``non_json`` (prose where JSON was asked), ``truncated``
(``finish_reason="length"``, Anthropic ``max_tokens``). ``latency_s`` adds a fixed latency to
every answer (the benchmark's 200 ms server).

As a process, for load tests and the benchmark (runs until SIGTERM or SIGINT, prints
``listening on http://HOST:PORT/v1`` once ready and ``served requests=N peak_in_flight=M`` on
exit)::

    python -m workers.testing --port 8101 --latency-ms 200
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import orjson
from aiohttp import web

__all__ = ["Behaviour", "ModelServer", "ReceivedRequest", "main"]

BehaviourKind = Literal[
    "ok", "fail", "malformed", "empty", "refusal", "non_json", "truncated"
]

DEFAULT_ANSWER = "Our support team is available from 9am to 5pm, Monday to Friday."
DEFAULT_JSON_ANSWER = '{"answer": "ok"}'
REFUSAL_ANSWER = "I'm sorry, but I can't help with that request."
NON_JSON_ANSWER = "Sure! The store opens at 9am and closes at 5pm."
TRUNCATED_ANSWER = "The answer to your question depends on several factors, the first of"


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the server answers one call. Build with the class methods."""

    kind: BehaviourKind = "ok"
    delay_s: float = 0.0
    status: int = 200
    retry_after: str | None = None
    content: str | None = None

    @classmethod
    def ok(cls, content: str | None = None, *, delay_s: float = 0.0) -> Behaviour:
        """A good answer: ``content``, or a default (JSON when the request asks for JSON)."""
        return cls("ok", delay_s=delay_s, content=content)

    @classmethod
    def slow(cls, delay_s: float, content: str | None = None) -> Behaviour:
        """A good answer after ``delay_s`` seconds."""
        return cls("ok", delay_s=delay_s, content=content)

    @classmethod
    def fail(
        cls, status: int, *, retry_after: str | float | None = None, delay_s: float = 0.0
    ) -> Behaviour:
        """An HTTP error ``status`` with an error body, and ``Retry-After`` when given."""
        return cls(
            "fail",
            delay_s=delay_s,
            status=status,
            retry_after=None if retry_after is None else str(retry_after),
        )

    @classmethod
    def malformed(cls) -> Behaviour:
        """HTTP 200 with a body that is not JSON."""
        return cls("malformed")

    @classmethod
    def empty(cls) -> Behaviour:
        return cls("empty", content="")

    @classmethod
    def refusal(cls) -> Behaviour:
        return cls("refusal", content=REFUSAL_ANSWER)

    @classmethod
    def non_json(cls) -> Behaviour:
        """Prose, whatever format the request asked for."""
        return cls("non_json", content=NON_JSON_ANSWER)

    @classmethod
    def truncated(cls) -> Behaviour:
        """A partial answer cut at the token limit."""
        return cls("truncated", content=TRUNCATED_ANSWER)


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One call as the server saw it."""

    api: Literal["openai", "anthropic"]
    model: str | None
    headers: Mapping[str, str]
    body: Mapping[str, Any]
    received_at: float = field(default_factory=time.monotonic)


class ModelServer:
    """An OpenAI- and Anthropic-compatible model server in a background thread.

    ``port=0`` picks a free port. ``latency_s`` is added to every answer. ``keep`` bounds how
    many :class:`ReceivedRequest` are remembered (counters are exact regardless).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        behaviour: Behaviour | None = None,
        keep: int = 10_000,
    ) -> None:
        self.host = host
        self.latency_s = latency_s
        self._requested_port = port
        self._lock = threading.Lock()
        self._behaviour = behaviour or Behaviour.ok()
        self._script: collections.deque[Behaviour] = collections.deque()
        self._mix: tuple[list[Behaviour], list[float], random.Random] | None = None
        self._by_model: dict[str, collections.deque[Behaviour]] = {}
        self.received: collections.deque[ReceivedRequest] = collections.deque(maxlen=keep)
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # -- what to answer ----------------------------------------------------------------------

    @property
    def behaviour(self) -> Behaviour:
        """The default answer (after any scripted ones); setting it clears a mix."""
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: Behaviour) -> None:
        with self._lock:
            self._behaviour = value
            self._mix = None

    def script(self, *behaviours: Behaviour) -> None:
        """Answer the next calls with ``behaviours``, in order, then fall back."""
        with self._lock:
            self._script.extend(behaviours)

    def mix(self, weights: Mapping[Behaviour, float], *, seed: int = 0) -> None:
        """Pick each answer at random with these weights (reproducible with ``seed``)."""
        with self._lock:
            self._mix = (list(weights), list(weights.values()), random.Random(seed))

    def for_model(self, model: str, *behaviours: Behaviour) -> None:
        """Answer calls that name ``model`` with ``behaviours`` in order; the last repeats.

        A tier worker names the request's pinned model (``ScoredRequest.model``), so one
        server can give every request of a test its own fault.
        """
        if not behaviours:
            raise ValueError("for_model needs at least one behaviour")
        with self._lock:
            self._by_model[model] = collections.deque(behaviours)

    def reset(self) -> None:
        """Back to ``ok`` answers; counters and the received list cleared."""
        with self._lock:
            self._behaviour = Behaviour.ok()
            self._script.clear()
            self._mix = None
            self._by_model.clear()
            self.received.clear()
            self.requests = 0
            self.peak_in_flight = self.in_flight

    def _next(self, model: Any) -> Behaviour:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            queue = self._by_model.get(model) if isinstance(model, str) else None
            if queue:
                return queue.popleft() if len(queue) > 1 else queue[0]
            if self._script:
                return self._script.popleft()
            if self._mix is not None:
                choices, weights, rng = self._mix
                return rng.choices(choices, weights)[0]
            return self._behaviour

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API root to put into ``TierSettings.base_url``."""
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> None:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            return
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                try:
                    self._runner, self.port = loop.run_until_complete(
                        _serve(self, self.host, self._requested_port)
                    )
                except BaseException as exc:
                    failure.append(exc)
                    return
                finally:
                    ready.set()
                loop.run_forever()
                loop.run_until_complete(self._runner.cleanup())
            finally:
                _cancel_all(loop)
                loop.close()

        self._thread = threading.Thread(target=serve, name="model-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            self._thread.join(5)
            self._thread = None
            raise failure[0]

    def stop(self) -> None:
        """Stop serving; calls in progress are cut off. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        thread.join(30)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def wait_requests(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until the server has received ``count`` calls; TimeoutError after timeout_s."""

        async def poll() -> None:
            while True:
                if self.requests >= count:
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), timeout_s)

    def __repr__(self) -> str:
        return f"ModelServer(port={self.port}, requests={self.requests})"

    # -- answering ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        api: Literal["openai", "anthropic"] = (
            "anthropic" if request.path.endswith("/messages") else "openai"
        )
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        behaviour = self._next(body.get("model") if isinstance(body, dict) else None)
        try:
            if not isinstance(body, dict):
                return _error(api, 400, "the request body is not a JSON object")
            self.received.append(
                ReceivedRequest(
                    api=api,
                    model=body.get("model"),
                    headers=dict(request.headers),
                    body=body,
                )
            )
            delay = self.latency_s + behaviour.delay_s
            if delay > 0:
                await asyncio.sleep(delay)
            return _answer(api, behaviour, body)
        finally:
            self._done()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


async def _serve(server: ModelServer, host: str, port: int) -> tuple[web.AppRunner, int]:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", server.handle)
    app.router.add_post("/v1/messages", server.handle)
    app.router.add_post("/chat/completions", server.handle)
    app.router.add_post("/messages", server.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sockets = getattr(site._server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _wants_json(body: Mapping[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


def _error(api: str, status: int, message: str, retry_after: str | None = None) -> web.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else None
    if api == "anthropic":
        payload: dict[str, Any] = {
            "type": "error",
            "error": {"type": "api_error", "message": message},
        }
    else:
        payload = {"error": {"message": message, "type": "server_error", "code": status}}
    return web.Response(
        body=orjson.dumps(payload), status=status, headers=headers,
        content_type="application/json",
    )


def _answer(api: str, behaviour: Behaviour, body: Mapping[str, Any]) -> web.Response:
    if behaviour.kind == "fail":
        return _error(api, behaviour.status, f"simulated HTTP {behaviour.status}",
                      behaviour.retry_after)
    if behaviour.kind == "malformed":
        return web.Response(
            body=b'{"choices": [{"message": {"content": "tru', content_type="application/json"
        )
    content = behaviour.content
    if content is None:
        content = DEFAULT_JSON_ANSWER if _wants_json(body) else DEFAULT_ANSWER
    truncated = behaviour.kind == "truncated"
    messages = body.get("messages")
    prompt_chars = sum(
        len(m.get("content", "")) for m in messages or () if isinstance(m, dict)
        and isinstance(m.get("content"), str)
    )
    input_tokens = max(1, prompt_chars // 4)
    output_tokens = _tokens(content)
    model = body.get("model") or "test-model"
    payload: dict[str, Any]
    if api == "anthropic":
        payload = {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": content}] if content else [],
            "stop_reason": "max_tokens" if truncated else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    else:
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "length" if truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


async def _serve_until_signalled(host: str, port: int, latency_s: float) -> None:
    server = ModelServer(host=host, port=port, latency_s=latency_s)
    runner, bound = await _serve(server, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"listening on http://{host}:{bound}/v1\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        sys.stdout.write(
            f"served requests={server.requests} peak_in_flight={server.peak_in_flight}\n"
        )
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """``python -m workers.testing``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.testing",
        description="OpenAI- and Anthropic-compatible test model server with fixed latency.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    asyncio.run(_serve_until_signalled(args.host, args.port, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
