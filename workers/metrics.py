"""Prometheus metrics of one tier worker, and its ``/metrics`` + ``/healthz`` HTTP server.

Each worker owns a :class:`~prometheus_client.CollectorRegistry` (never the global one), so
several workers in one process, or one test session, do not collide.

==========================================  ==================================================
``llm_router_worker_in_flight``             requests taken from Kafka, outcome not published
``llm_router_worker_paused``                1 while fetching is paused (backpressure)
``llm_router_worker_calls_total``           model calls by ``outcome`` (ok, timeout, …)
``llm_router_worker_messages_total``        messages by what became of them (``response``,
                                            ``uproute``, ``deadletter``, ``duplicate``)
``llm_router_worker_call_latency_seconds``  model call latency per ``model``
``llm_router_worker_tokens_total``          tokens per ``model`` and ``kind`` (input, output)
``llm_router_worker_cost_usd_total``        cost from the tier's price table per ``model``
==========================================  ==================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["MetricsServer", "WorkerMetrics"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """The metrics of one worker of one tier, in their own registry."""

    def __init__(self, tier: str, worker_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tier = tier
        labels = {"tier": tier, "worker_id": worker_id}
        common: dict[str, Any] = {"registry": self.registry}
        self.in_flight = Gauge(
            "llm_router_worker_in_flight",
            "Requests taken from Kafka whose outcome is not yet published.",
            list(labels),
            **common,
        ).labels(**labels)
        self.paused = Gauge(
            "llm_router_worker_paused",
            "1 while fetching is paused because in-flight requests reached the limit.",
            list(labels),
            **common,
        ).labels(**labels)
        self._calls = Counter(
            "llm_router_worker_calls",
            "Model calls by outcome.",
            ["tier", "model", "outcome"],
            **common,
        )
        self._messages = Counter(
            "llm_router_worker_messages",
            "Messages consumed by what became of them.",
            ["tier", "result"],
            **common,
        )
        self._latency = Histogram(
            "llm_router_worker_call_latency_seconds",
            "Model call latency.",
            ["tier", "model"],
            buckets=_LATENCY_BUCKETS,
            **common,
        )
        self._tokens = Counter(
            "llm_router_worker_tokens",
            "Tokens used, by kind.",
            ["tier", "model", "kind"],
            **common,
        )
        self._cost = Counter(
            "llm_router_worker_cost_usd",
            "Cost of model calls in US dollars, from the tier's price table.",
            ["tier", "model"],
            **common,
        )

    def call(
        self,
        model: str,
        outcome: str,
        latency_s: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """Record one model call."""
        self._calls.labels(self.tier, model, outcome).inc()
        self._latency.labels(self.tier, model).observe(latency_s)
        if input_tokens:
            self._tokens.labels(self.tier, model, "input").inc(input_tokens)
        if output_tokens:
            self._tokens.labels(self.tier, model, "output").inc(output_tokens)
        if cost_usd:
            self._cost.labels(self.tier, model).inc(cost_usd)

    def message(self, result: str) -> None:
        """Record what became of one consumed message."""
        self._messages.labels(self.tier, result).inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent); for tests and the benchmark."""
        found = self.registry.get_sample_value(name, {"tier": self.tier, **labels})
        return 0.0 if found is None else found

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` (Prometheus text) and ``GET /healthz`` (200 or 503 with JSON).

    ``port=0`` picks a free port; :attr:`port` is the bound one after :meth:`start`.
    """

    def __init__(
        self,
        metrics: WorkerMetrics,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        *,
        host: str = "0.0.0.0",
        port: int = 0,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._requested_port
        logger.info("metrics and health on http://%s:%s", self._host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

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

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _serve_health(self, request: web.Request) -> web.Response:
        healthy, detail = self._health()
        return web.json_response(
            {"status": "ok" if healthy else "unavailable", **detail},
            status=200 if healthy else 503,
        )
