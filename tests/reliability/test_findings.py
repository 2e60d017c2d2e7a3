"""Bugs the reliability harness found, each shown by the cheapest test that is still real.

Open ones are ``xfail(strict=True)``: the suite stays green while a bug is open, and the
test turns into a failure (XPASS) the day it is fixed, so that its marker is removed. Fixed
ones stay as regression tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from deploy.demo import collect_summary
from schemas.settings import Settings, TopicSettings
from streams.client import RouterClient


@pytest.mark.integration
async def test_router_client_starts_against_the_real_broker(
    make_settings: Callable[..., Settings], created_topics: TopicSettings
) -> None:
    # Found by the harness: start() awaited aiokafka's synchronous partitions_for_topic
    # (TypeError); fixed in streams/client.py with topic_partitions().
    client = RouterClient(make_settings())
    try:
        await asyncio.wait_for(client.start(), 60)
    finally:
        await client.stop()


def test_router_group_session_timeout_allows_a_quick_takeover() -> None:
    # Found by the router-SIGKILL scenario: with Faust's default 60 s session timeout a
    # replacement router routed nothing for ~60 s. Now a setting, 10 s by default.
    from streams.app import _faust_app

    app = _faust_app(Settings())
    assert app.conf.broker_session_timeout <= 15.0


@pytest.mark.integration
async def test_collect_summary_reads_the_result_topics(
    make_settings: Callable[..., Settings], created_topics: TopicSettings
) -> None:
    # Found with the above: deploy/demo.py _read_all (collect_summary, `llm-router stats`,
    # `tail`) had the same await; fixed with streams.client.topic_partitions().
    summary = await asyncio.wait_for(collect_summary(make_settings()), 60)
    assert summary.total == 0
