"""Prometheus metrics of one router process, in a registry of its own.

>>> metrics = RouterMetrics()
>>> metrics.requests.labels(tier="fast", category="simple", reason="score").inc()
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["RouterMetrics"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 2.5,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class RouterMetrics:
    """The router's metrics; ``start(port)`` serves them (port 0: a free port, see ``port``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "router_requests", "Requests routed, by tier, category and reason.",
            ["tier", "category", "reason"], registry=r,
        )
        self.scoring_seconds = Histogram(
            "router_scoring_seconds", "Classifier time per batch.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "router_batch_size", "Requests per scored batch.", buckets=_BATCH_BUCKETS, registry=r,
        )
        self.stage_seconds = Histogram(
            "router_stage_seconds",
            "Request produced (its Kafka timestamp) to its scored request handed to the producer.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.wait_seconds = Histogram(
            "router_wait_seconds",
            "Request produced (its Kafka timestamp) to its batch starting: fetch plus batching.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.fetch_seconds = Histogram(
            "router_fetch_seconds",
            "Request produced (its Kafka timestamp) to read by the router: broker and fetch.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batching_seconds = Histogram(
            "router_batching_seconds",
            "Request read by the router to its batch starting: the batching window and the "
            "previous batch's scoring.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.produce_seconds = Histogram(
            "router_produce_seconds", "Batch sends issued to every one acknowledged.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.uproutes = Counter(
            "router_uproutes", "Up-route events handled, by cause and outcome.",
            ["cause", "outcome"], registry=r,
        )
        self.dead_letters = Counter(
            "router_dead_letters", "Dead letters published, by stage and kind.",
            ["stage", "error_kind"], registry=r,
        )
        self.consumer_lag = Gauge(
            "router_consumer_lag", "Messages not yet read, by topic and partition.",
            ["topic", "partition"], registry=r,
        )
        self.stalls = Counter(
            "router_stalls", "Partitions found stalled by the watchdog (the router then exits).",
            registry=r,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def start(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``port`` in a daemon thread (idempotent)."""
        if self._server is not None:
            return
        self._server, self._thread = start_http_server(port, addr, registry=self.registry)
        self.port = int(self._server.server_port)
        logger.info("metrics served on %s:%d", addr, self.port)

    def stop(self) -> None:
        """Stop serving (safe to call twice)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
