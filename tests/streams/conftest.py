"""Fixtures of the router stream tests (helpers live in ``router_helpers``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from router_helpers import FakeScorer, FakeSink

from schemas.settings import Settings


@pytest.fixture
def fake_scorer() -> FakeScorer:
    return FakeScorer()


@pytest.fixture
def fake_sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def router_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """``make_settings`` with a fresh app id, no web server and a free metrics port."""

    def make(**router: Any) -> Settings:
        values: dict[str, Any] = {
            "app_id": f"router-{uuid.uuid4().hex[:8]}",
            "web_port": 0,
            "metrics_port": 0,
        }
        values.update(router)
        return make_settings(router=values)

    return make
