"""Nothing is lost under faults: the real router, worker pools and broker, with faults injected.

Each scenario drives a few hundred requests through ``RouterClient`` while a fault repeats,
then reads the responses and dead-letter topics from the beginning and accounts for every
request id: ``lost = sent - answered - dead_lettered`` must be 0, and the application must
never get two final results for one request. The figures are printed (``-s`` shows them).
The long version is ``bench/bench_faults.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from bench.harness import (
    Fault,
    Scenario,
    ScenarioReport,
    Stack,
    kill_router,
    kill_worker,
    rebalance_storm,
    restart_broker,
)
from deploy.admin import create_all_topics
from deploy.broker import KafkaBroker
from schemas.settings import KafkaSettings, Settings
from workers.testing import Behaviour, ModelServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

# Every scenario's whole run (start, warm-up, load, drain, count) is bounded by this.
SCENARIO_TIMEOUT_S = 300


def check(report: ScenarioReport) -> None:
    print()
    print(report.table())
    assert report.sent > 0
    assert report.answered > 0
    assert report.lost == 0, f"lost {report.lost}: {report.lost_ids[:20]}"
    assert report.delivered_duplicates == 0
    assert report.sent == report.answered + report.dead_lettered
    assert not report.agent_crashes, report.agent_crashes[:5]


async def run(stack: Stack, scenario: Scenario) -> ScenarioReport:
    async def whole() -> ScenarioReport:
        async with stack:
            return await scenario.run(stack)

    return await asyncio.wait_for(whole(), SCENARIO_TIMEOUT_S)


async def test_worker_sigkilled_every_few_seconds_and_router_once(
    stack_settings: Callable[..., Settings], stacks: Callable[..., Stack]
) -> None:
    settings = stack_settings()
    stack = stacks(settings, workers={"fast": 2, "balanced": 1, "frontier": 1})
    scenario = Scenario(
        "worker SIGKILL every 4 s + router SIGKILL once",
        rate=8,
        duration_s=30,
        faults=[
            Fault.every(4.0, kill_worker(rng=random.Random(3))),
            Fault.once(6.0, kill_router()),
        ],
    )
    report = await run(stack, scenario)
    check(report)
    assert len(report.faults) >= 6
    assert not report.crashes


async def test_broker_stopped_and_restarted_mid_run(
    make_broker: Callable[..., KafkaBroker],
    stack_settings: Callable[..., Settings],
    stacks: Callable[..., Stack],
) -> None:
    broker = make_broker()
    await asyncio.to_thread(broker.start)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, client_id="rel-broker")
    settings = stack_settings(kafka=kafka)
    await asyncio.wait_for(create_all_topics(settings), 60)
    stack = stacks(settings, broker=broker)
    scenario = Scenario(
        "broker stop/restart",
        rate=8,
        duration_s=25,
        faults=[Fault.once(8.0, restart_broker(down_s=5.0))],
    )
    report = await run(stack, scenario)
    check(report)
    assert [what for _, what, _, _ in report.faults] == ["broker stopped, restarted after 5 s"]
    assert report.recovery_s is not None


async def test_faulty_model_servers_and_one_tier_down(
    model_servers: dict[str, ModelServer],
    stack_settings: Callable[..., Settings],
    stacks: Callable[..., Stack],
) -> None:
    # 20% 500s, 10% 429 with Retry-After, 10% timeouts (slower than every tier's timeout),
    # 5% invalid output (not JSON at all, or an empty answer); the balanced tier is down.
    for seed, tier in enumerate(("fast", "frontier")):
        model_servers[tier].mix(
            {
                Behaviour.ok(): 0.55,
                Behaviour.fail(500): 0.20,
                Behaviour.fail(429, retry_after="0.2"): 0.10,
                Behaviour.slow(3.0): 0.10,
                Behaviour.malformed(): 0.025,
                Behaviour.empty(): 0.025,
            },
            seed=seed,
        )
    model_servers["balanced"].stop()
    settings = stack_settings(
        tiers={"fast": {"timeout_s": 0.5}, "balanced": {"timeout_s": 0.5},
               "frontier": {"timeout_s": 1.0}},
    )
    stack = stacks(settings)
    scenario = Scenario("faulty model servers, balanced down", rate=8, duration_s=25)
    report = await run(stack, scenario)
    check(report)
    # Every tier failing the same request is possible: those are dead letters, by cause.
    causes = {"timeout", "rate_limited", "upstream_error", "rejected", "invalid_output"}
    assert set(report.dead_letter_causes) <= {f"uproute/{cause}" for cause in causes}


async def test_rebalance_storm(
    stack_settings: Callable[..., Settings], stacks: Callable[..., Stack]
) -> None:
    settings = stack_settings()
    stack = stacks(settings, workers={"fast": 2, "balanced": 1, "frontier": 1})
    scenario = Scenario(
        "rebalance storm (fast tier)",
        rate=8,
        duration_s=25,
        faults=[Fault.every(5.0, rebalance_storm("fast", extra=2, up_s=2.5), start_s=3.0)],
    )
    report = await run(stack, scenario)
    check(report)
    assert len(report.faults) >= 4
