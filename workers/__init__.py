"""Tier worker pools: consume a tier's topic, call its model, publish one outcome per request.

::

    from workers import TierWorker

    async with TierWorker(settings, "fast") as worker:
        await worker.join()

See :mod:`workers.worker` for the outcomes and delivery guarantees, :mod:`workers.providers`
for the model APIs, :mod:`workers.validation` for the answer checks and :mod:`workers.testing`
for the local model server used by tests and load tests.
"""

from workers.metrics import MetricsServer, WorkerMetrics
from workers.offsets import OffsetTracker, RecentIds
from workers.providers import (
    AnthropicProvider,
    Completion,
    HTTPProvider,
    OpenAIProvider,
    Provider,
    make_provider,
    map_http_error,
    parse_retry_after,
)
from workers.timeouts import call_timeout_s, httpx_timeout, remaining_s, tier_timeout_s
from workers.validation import CHECKS, validate_answer
from workers.worker import TierWorker, group_id_of, run_worker

__all__ = [
    "AnthropicProvider",
    "CHECKS",
    "Completion",
    "HTTPProvider",
    "MetricsServer",
    "OffsetTracker",
    "OpenAIProvider",
    "Provider",
    "RecentIds",
    "TierWorker",
    "WorkerMetrics",
    "call_timeout_s",
    "group_id_of",
    "httpx_timeout",
    "make_provider",
    "map_http_error",
    "parse_retry_after",
    "remaining_s",
    "run_worker",
    "tier_timeout_s",
    "validate_answer",
]
