"""Fixtures of the tier worker tests: a local model server and worker settings.

The broker fixtures (``kafka_broker``, ``make_settings``, ``created_topics``…) come from
``tests/conftest.py``; helpers live in ``worker_helpers.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from schemas.settings import Settings, TopicSettings
from workers.testing import ModelServer


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    """A fresh OpenAI/Anthropic-compatible server answering ``ok``."""
    with ModelServer() as server:
        yield server


@pytest.fixture
def worker_settings(
    make_settings: Callable[..., Settings],
    created_topics: TopicSettings,
    model_server: ModelServer,
) -> Callable[..., Settings]:
    """``worker_settings(tier={...}, workers={...})``: Settings whose ``fast`` tier calls
    ``model_server``, in a consumer group of this test only."""
    app_id = f"t-{uuid.uuid4().hex[:8]}"

    def make(*, tier: dict[str, Any] | None = None, **overrides: Any) -> Settings:
        fast: dict[str, Any] = {
            "base_url": model_server.url,
            "model": "tier-model",
            "timeout_s": 0.5,
            "concurrency": 64,
            "price_input_per_mtok": 1.0,
            "price_output_per_mtok": 2.0,
        }
        fast.update(tier or {})
        workers = {"commit_interval_ms": 100, "shutdown_grace_s": 5.0}
        workers.update(overrides.pop("workers", {}))
        return make_settings(
            tiers={"fast": fast},
            router={"app_id": app_id},
            workers=workers,
            **overrides,
        )

    return make


