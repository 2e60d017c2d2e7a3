"""Model providers: one small interface, one pooled HTTP client per endpoint.

A provider turns a :class:`~schemas.messages.ScoredRequest` into one HTTP call of a model and
the answer into a :class:`Completion`. Every failure leaves it as an error of the project's
hierarchy (see :mod:`schemas.errors`), translated in one place, :func:`map_http_error`::

    httpx.TimeoutException, TimeoutError   -> UpstreamTimeout       (retriable)
    HTTP 429 (+ Retry-After)               -> UpstreamRateLimited   (retriable, retry_after_s)
    HTTP 408                               -> UpstreamTimeout       (retriable)
    HTTP 5xx, connect/read/write errors    -> UpstreamUnavailable   (retriable)
    HTTP 4xx                               -> UpstreamRejected
    undecodable or incomplete body         -> UpstreamMalformed

The HTTP client is httpx. Its connections go through aiohttp's pool by default
(``httpx-aiohttp``'s transport; ``TierSettings.http_client = "aiohttp"``): httpcore's own pool
does work per queued request on every change, so one client with hundreds of connections in use
slows to a crawl (measured here: 2,000 calls at 200 in flight against a 200 ms server took
47.6 s with httpcore's pool and 2.9 s through aiohttp's; see ``bench/bench_worker.py``).
``http_client = "httpx"`` keeps httpcore's pool (HTTP/2 capable) for small pools.

Example::

    provider = make_provider(settings.tier("fast"))
    async with provider:
        completion = await provider.complete(scored, "smollm2-135m-instruct", httpx.Timeout(0.5))
        print(completion.content, completion.output_tokens)

API keys come from the tier's settings as :class:`~pydantic.SecretStr`; they are unwrapped only
into the request headers and never logged or put into an error message.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from schemas.errors import (
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from schemas.messages import ScoredRequest
from schemas.settings import TierSettings

__all__ = [
    "ANTHROPIC_VERSION",
    "AnthropicProvider",
    "Completion",
    "HTTPProvider",
    "OpenAIProvider",
    "Provider",
    "make_provider",
    "map_http_error",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

ANTHROPIC_VERSION = "2023-06-01"
# Upstream error bodies are quoted into error details, shortened to this many characters.
_BODY_EXCERPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer. ``finish_reason`` uses OpenAI's words: ``stop``, ``length``, …"""

    content: str
    finish_reason: str | None
    input_tokens: int = 0
    output_tokens: int = 0


@runtime_checkable
class Provider(Protocol):
    """What the tier worker needs from a model endpoint."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def complete(
        self,
        request: ScoredRequest,
        model: str,
        timeout: httpx.Timeout,  # noqa: ASYNC109 - a value handed to httpx (per phase)
    ) -> Completion:
        """Call ``model`` once; raise an :class:`~schemas.errors.UpstreamError` on failure."""
        ...


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Returns ``None`` when there is no usable value; never a negative number.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form may lack the zone
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _retry_after(headers: httpx.Headers) -> float | None:
    # Some OpenAI-compatible servers send a precise millisecond hint beside Retry-After.
    precise = headers.get("retry-after-ms")
    if precise is not None:
        try:
            millis = float(precise)
        except ValueError:
            pass
        else:
            if math.isfinite(millis):
                return max(0.0, millis / 1000.0)
    return parse_retry_after(headers.get("retry-after"))


def _excerpt(response: httpx.Response) -> str:
    try:
        text = response.text
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        return ""
    text = " ".join(text.split())
    if len(text) > _BODY_EXCERPT_CHARS:
        text = text[:_BODY_EXCERPT_CHARS] + "…"
    return text


def map_http_error(error: BaseException | httpx.Response) -> UpstreamError:
    """Translate an httpx exception or a non-2xx response into the project's hierarchy."""
    if isinstance(error, UpstreamError):
        return error
    if isinstance(error, httpx.Response):
        status = error.status_code
        body = _excerpt(error)
        message = f"HTTP {status} from {error.request.url.host}" + (f": {body}" if body else "")
        if status == 429:
            return UpstreamRateLimited(
                message, status=status, retry_after_s=_retry_after(error.headers)
            )
        if status == 408:
            return UpstreamTimeout(message, status=status)
        if status >= 500:
            return UpstreamUnavailable(message, status=status)
        if 400 <= status < 500:
            return UpstreamRejected(message, status=status)
        return UpstreamMalformed(f"unexpected {message}", status=status)
    cause = error.__cause__ if isinstance(error, httpx.HTTPError) else error
    if isinstance(cause, aiohttp.ClientError) and not isinstance(cause, TimeoutError):
        # The aiohttp transport maps most connection errors to httpx.ConnectTimeout; a refused
        # connection or a dropped, cut or garbled answer is not a timeout (httpcore: a
        # ConnectError or RemoteProtocolError).
        return UpstreamUnavailable(f"{type(cause).__name__}: {cause}")
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        kind = type(error).__name__
        return UpstreamTimeout(f"no answer in time ({kind})")
    if isinstance(error, httpx.DecodingError):
        return UpstreamMalformed(f"undecodable response: {error}")
    if isinstance(error, httpx.NetworkError | httpx.RemoteProtocolError):
        return UpstreamUnavailable(f"{type(error).__name__}: {error}")
    if isinstance(error, httpx.HTTPError):
        return UpstreamError(f"{type(error).__name__}: {error}")
    if isinstance(error, OSError):
        return UpstreamUnavailable(f"{type(error).__name__}: {error}")
    return UpstreamError(f"{type(error).__name__}: {error}")


class HTTPProvider:
    """Shared plumbing of the HTTP providers: the pooled client, the call, error mapping.

    Subclasses say where to post (:attr:`path`), which headers and body to send, and how to
    read the answer. ``transport`` replaces the network, for tests.
    """

    name = "http"
    path = ""

    def __init__(
        self,
        tier: TierSettings,
        *,
        max_connections: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._tier = tier
        self._max_connections = max_connections or tier.concurrency
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._url = tier.base_url.rstrip("/") + self.path

    @property
    def url(self) -> str:
        return self._url

    async def start(self) -> None:
        if self._client is not None:
            return
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
            keepalive_expiry=30.0,
        )
        transport = self._transport
        if transport is None and self._tier.http_client == "aiohttp":
            transport = AiohttpTransport(limits=limits, trust_env=False)
        self._client = httpx.AsyncClient(
            limits=limits,
            timeout=httpx.Timeout(self._tier.timeout_s, connect=self._tier.connect_timeout_s),
            headers=self._headers(),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def max_tokens(self, request: ScoredRequest) -> int:
        """The request's output budget, capped by the tier's."""
        asked = request.request.max_output_tokens
        cap = self._tier.max_output_tokens
        return cap if asked is None else min(asked, cap)

    async def complete(
        self,
        request: ScoredRequest,
        model: str,
        timeout: httpx.Timeout,  # noqa: ASYNC109 - a value handed to httpx (per phase)
    ) -> Completion:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        body = orjson.dumps(self._body(request, model))
        try:
            response = await self._client.post(
                self._url,
                content=body,
                headers={"content-type": "application/json"},
                timeout=timeout,
            )
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            raise map_http_error(exc) from None
        if response.status_code != 200:
            raise map_http_error(response)
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamMalformed(
                f"response body is not JSON: {exc}", status=response.status_code
            ) from None
        if not isinstance(payload, dict):
            raise UpstreamMalformed(
                f"response body is a JSON {type(payload).__name__}, not an object",
                status=response.status_code,
            )
        try:
            return self._parse(payload)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise UpstreamMalformed(
                f"response lacks {type(exc).__name__}: {exc}", status=response.status_code
            ) from None

    def _headers(self) -> dict[str, str]:
        return {}

    def _body(self, request: ScoredRequest, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, payload: dict[str, Any]) -> Completion:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self._url!r})"


def _tokens(usage: Any, key: str) -> int:
    if not isinstance(usage, dict):
        return 0
    value = usage.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


class OpenAIProvider(HTTPProvider):
    """OpenAI-compatible chat completions: vLLM, llama.cpp server, Groq, OpenAI, Together…

    ``base_url`` is the API root including ``/v1``; the call goes to ``{base_url}/chat/completions``
    with ``Authorization: Bearer <api_key>`` when the tier has a key.
    """

    name = "openai"
    path = "/chat/completions"

    def _headers(self) -> dict[str, str]:
        if self._tier.api_key is None:
            return {}
        return {"authorization": f"Bearer {self._tier.api_key.get_secret_value()}"}

    def _body(self, request: ScoredRequest, model: str) -> dict[str, Any]:
        route = request.request
        body: dict[str, Any] = {
            "model": model,
            "messages": [m.model_dump(exclude_none=True) for m in route.messages],
            "max_tokens": self.max_tokens(request),
            "temperature": self._tier.temperature,
            "stream": False,
        }
        if route.tools:
            body["tools"] = route.tools
        if route.format.kind == "json":
            body["response_format"] = {"type": "json_object"}
        elif route.format.kind == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": route.format.json_schema},
            }
        return body

    def _parse(self, payload: dict[str, Any]) -> Completion:
        choice = payload["choices"][0]
        message = choice["message"]
        content = message.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TypeError("choices[0].message.content is not a string")
        finish = choice.get("finish_reason")
        usage = payload.get("usage")
        return Completion(
            content=content,
            finish_reason=finish if isinstance(finish, str) else None,
            input_tokens=_tokens(usage, "prompt_tokens"),
            output_tokens=_tokens(usage, "completion_tokens"),
        )


# Anthropic's stop reasons in OpenAI's words, so that validation reads one vocabulary.
_ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider(HTTPProvider):
    """Anthropic Messages API: ``{base_url}/messages`` with ``x-api-key``.

    System messages become the ``system`` parameter; tool results are sent as user turns.
    """

    name = "anthropic"
    path = "/messages"

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self._tier.api_key is not None:
            headers["x-api-key"] = self._tier.api_key.get_secret_value()
        return headers

    def _body(self, request: ScoredRequest, model: str) -> dict[str, Any]:
        route = request.request
        system = "\n\n".join(m.content for m in route.messages if m.role == "system")
        messages = [
            {"role": "assistant" if m.role == "assistant" else "user", "content": m.content}
            for m in route.messages
            if m.role != "system"
        ]
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": self.max_tokens(request),
            "temperature": self._tier.temperature,
        }
        if system:
            body["system"] = system
        if route.tools:
            body["tools"] = route.tools
        return body

    def _parse(self, payload: dict[str, Any]) -> Completion:
        if payload.get("type") == "error":
            raise ValueError("an error object in a 200 response")
        blocks = payload["content"]
        if not isinstance(blocks, list):
            raise TypeError("content is not a list")
        content = "".join(
            block["text"]
            for block in blocks
            if isinstance(block, dict) and block.get("type") == "text"
        )
        stop = payload.get("stop_reason")
        usage = payload.get("usage")
        return Completion(
            content=content,
            finish_reason=_ANTHROPIC_FINISH.get(stop, stop) if isinstance(stop, str) else None,
            input_tokens=_tokens(usage, "input_tokens"),
            output_tokens=_tokens(usage, "output_tokens"),
        )


def make_provider(
    tier: TierSettings,
    *,
    max_connections: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> HTTPProvider:
    """The provider named by ``tier.provider``, not yet started."""
    providers: dict[str, type[HTTPProvider]] = {
        "openai": OpenAIProvider,
        "anthropic": AnthropicProvider,
    }
    return providers[tier.provider](tier, max_connections=max_connections, transport=transport)
