"""Fault and load benchmark: the long version of ``tests/reliability/``. Prints numbers.

    .venv/bin/python bench/bench_faults.py                     # every scenario, 120 s each,
                                                               # then 10 minutes sustained
    .venv/bin/python bench/bench_faults.py --duration 60 --sustained-duration 120
    .venv/bin/python bench/bench_faults.py --scenarios faulty,sustained --json out.json

Runs the real broker (a throwaway Apache Kafka of its own, so that it can be restarted), the
router and the tier worker pools as processes, and one local ModelServer per tier (with
``--latency-ms`` of model latency). Per scenario it prints sent, answered, dead-lettered (by
cause), lost (sent - answered - dead-lettered: must be 0), duplicates (what the application
saw: must be 0; what the SDK dropped; what the topics hold), p50/p99 latency and recovery
time after each fault.

Scenarios:

* ``kill``       a worker SIGKILLed every ``--kill-every`` s (and replaced); the router
                 SIGKILLed once, a third into the run
* ``broker``     the broker stopped (SIGTERM) a third into the run, started 10 s later
* ``faulty``     every model server: 20% HTTP 500, 10% 429 with Retry-After, 10% slower than
                 the tier's timeout, 5% invalid output; the balanced tier's server down
* ``storm``      worker processes of the fast tier started and stopped every 5 s
* ``sustained``  the highest rate that holds (a short ramp finds it, or ``--sustained-rate``)
                 for ``--sustained-duration`` s, consumer lag sampled per group; the lag must
                 stay bounded (not grow from the first third of the run to the last)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_broker, free_port  # noqa: E402
from bench.harness import (  # noqa: E402
    Fault,
    Scenario,
    ScenarioReport,
    Stack,
    kill_router,
    kill_worker,
    rebalance_storm,
    render_table,
    restart_broker,
    tier_overrides,
)
from deploy.admin import create_topics  # noqa: E402
from deploy.broker import KafkaBroker  # noqa: E402
from schemas.settings import KafkaSettings, Settings, TopicSettings  # noqa: E402
from workers.testing import Behaviour, ModelServer  # noqa: E402

CHAIN = ("fast", "balanced", "frontier")
SCENARIOS = ("kill", "broker", "faulty", "storm", "sustained")


class Bench:
    def __init__(self, args: argparse.Namespace, kafka: KafkaSettings,
                 broker: KafkaBroker | None, work_dir: Path) -> None:
        self.args = args
        self.kafka = kafka
        self.broker = broker
        self.work_dir = work_dir

    async def settings(self, servers: dict[str, ModelServer], **overrides: Any) -> Settings:
        prefix = f"b-{uuid.uuid4().hex[:8]}."
        topics = TopicSettings(
            requests=f"{prefix}llm.requests", tier_prefix=f"{prefix}llm.tier.",
            uproute=f"{prefix}llm.uproute", responses=f"{prefix}llm.responses",
            deadletter=f"{prefix}llm.deadletter", partitions=self.args.partitions,
        )
        tiers = tier_overrides(servers)
        for tier, values in overrides.pop("tiers", {}).items():
            tiers[tier].update(values)
        settings = Settings(
            kafka=self.kafka, topics=topics, tiers=tiers,
            router={"app_id": f"bench-{uuid.uuid4().hex[:8]}", "metrics_port": free_port(),
                    "web_port": 0},
            workers={"shutdown_grace_s": 3.0, "commit_interval_ms": 200},
            **overrides,
        )
        await asyncio.wait_for(create_topics(self.kafka, topics, settings.chain), 60)
        return settings

    async def run(self, name: str) -> ScenarioReport:
        latency_s = self.args.latency_ms / 1000
        servers = {tier: ModelServer(latency_s=latency_s) for tier in CHAIN}
        for server in servers.values():
            server.start()
        try:
            report: ScenarioReport = await getattr(self, f"scenario_{name}")(servers)
            return report
        finally:
            for server in servers.values():
                server.stop()

    def stack(self, settings: Settings, name: str, **kwargs: Any) -> Stack:
        return Stack(settings, run_dir=self.work_dir / name, **kwargs)

    async def _go(self, stack: Stack, scenario: Scenario) -> ScenarioReport:
        try:
            async with stack:
                return await scenario.run(stack)
        finally:
            stack.kill_all()

    async def scenario_kill(self, servers: dict[str, ModelServer]) -> ScenarioReport:
        a = self.args
        settings = await self.settings(servers)
        stack = self.stack(settings, "kill", workers={"fast": 2, "balanced": 2, "frontier": 1})
        return await self._go(stack, Scenario(
            f"worker SIGKILL every {a.kill_every:.0f} s + router SIGKILL once",
            rate=a.rate, duration_s=a.duration, drain_timeout_s=a.drain,
            faults=[
                Fault.every(a.kill_every, kill_worker(rng=random.Random(5))),
                Fault.once(a.duration / 3, kill_router()),
            ],
        ))

    async def scenario_broker(self, servers: dict[str, ModelServer]) -> ScenarioReport:
        a = self.args
        if self.broker is None:
            raise SystemExit("the broker scenario needs the bench's own broker (no --bootstrap)")
        settings = await self.settings(servers)
        stack = self.stack(settings, "broker", broker=self.broker)
        return await self._go(stack, Scenario(
            "broker stop/restart", rate=a.rate, duration_s=a.duration, drain_timeout_s=a.drain,
            faults=[Fault.once(a.duration / 3, restart_broker(down_s=10.0))],
        ))

    async def scenario_faulty(self, servers: dict[str, ModelServer]) -> ScenarioReport:
        a = self.args
        for seed, tier in enumerate(("fast", "frontier")):
            servers[tier].mix({
                Behaviour.ok(): 0.55,
                Behaviour.fail(500): 0.20,
                Behaviour.fail(429, retry_after="0.2"): 0.10,
                Behaviour.slow(3.0): 0.10,
                Behaviour.malformed(): 0.025,
                Behaviour.empty(): 0.025,
            }, seed=seed)
        servers["balanced"].stop()
        settings = await self.settings(servers, tiers={
            "fast": {"timeout_s": 0.5}, "balanced": {"timeout_s": 0.5},
            "frontier": {"timeout_s": 1.0},
        })
        stack = self.stack(settings, "faulty")
        return await self._go(stack, Scenario(
            "faulty model servers, balanced down", rate=a.rate, duration_s=a.duration,
            drain_timeout_s=a.drain,
        ))

    async def scenario_storm(self, servers: dict[str, ModelServer]) -> ScenarioReport:
        a = self.args
        settings = await self.settings(servers)
        stack = self.stack(settings, "storm", workers={"fast": 2, "balanced": 1, "frontier": 1})
        return await self._go(stack, Scenario(
            "rebalance storm (fast tier)", rate=a.rate, duration_s=a.duration,
            drain_timeout_s=a.drain,
            faults=[Fault.every(5.0, rebalance_storm("fast", extra=2, up_s=2.5), start_s=3.0)],
        ))

    async def scenario_sustained(self, servers: dict[str, ModelServer]) -> ScenarioReport:
        a = self.args
        rate = a.sustained_rate or await self.find_rate(servers)
        settings = await self.settings(servers)
        stack = self.stack(settings, "sustained", workers={t: 1 for t in CHAIN})
        report = await self._go(stack, Scenario(
            f"sustained {rate:.0f}/s for {a.sustained_duration:.0f} s", rate=rate,
            duration_s=a.sustained_duration, drain_timeout_s=a.drain, sample_lag_s=5.0,
            max_in_flight=100_000,
        ))
        return report

    async def find_rate(self, servers: dict[str, ModelServer]) -> float:
        """The highest rate of a short ramp whose requests all finish within 2 s (p99)."""
        a = self.args
        held = a.ramp[0]
        for rate in a.ramp:
            settings = await self.settings(servers)
            stack = self.stack(settings, f"ramp-{rate:.0f}", workers={t: 1 for t in CHAIN})
            report = await self._go(stack, Scenario(
                f"ramp {rate:.0f}/s", rate=rate, duration_s=a.ramp_duration,
                drain_timeout_s=60, max_in_flight=100_000,
            ))
            print(f"  ramp {rate:6.0f}/s: p50 {report.p50_ms:7.0f} ms, p99 {report.p99_ms:7.0f} "
                  f"ms, lost {report.lost}", flush=True)
            if report.p99_ms > 2000 or report.lost:
                break
            held = rate
        print(f"  highest rate held: {held:.0f}/s", flush=True)
        return float(held)


def lag_trend(samples: list[tuple[float, dict[str, int]]]) -> str:
    """Whether the lag stayed bounded: the first third of the samples against the last."""
    if len(samples) < 6:
        return "too few samples"
    third = len(samples) // 3
    first = [sum(lag.values()) for _, lag in samples[:third]]
    last = [sum(lag.values()) for _, lag in samples[-third:]]
    return (f"total lag: mean {statistics.mean(first):.0f} in the first third, "
            f"{statistics.mean(last):.0f} in the last third, max {max(first + last)}")


async def main_async(args: argparse.Namespace) -> int:
    work_dir = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    broker: KafkaBroker | None = None
    if args.bootstrap:
        kafka = KafkaSettings(bootstrap_servers=args.bootstrap, client_id="bench-faults")
    else:
        broker = bench_broker(work_dir / "kafka", heap_mb=768)
        print(f"starting a broker in {work_dir / 'kafka'}", flush=True)
        await asyncio.to_thread(broker.start)
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, client_id="bench-faults")
    bench = Bench(args, kafka, broker, work_dir)
    reports: list[ScenarioReport] = []
    failed = False
    try:
        for name in args.scenarios:
            print(f"\n--- {name} ---", flush=True)
            started = time.monotonic()
            report = await bench.run(name)
            reports.append(report)
            print(report.table())
            if name == "sustained":
                print(f"  {lag_trend(report.lag_samples)}")
            print(f"  (scenario took {time.monotonic() - started:.0f} s)", flush=True)
            failed |= report.lost > 0 or report.delivered_duplicates > 0
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.stop)
    print("\n" + render_table(reports))
    print(f"\nlogs and data: {work_dir}")
    if args.json:
        text = json.dumps([r.as_dict() for r in reports], indent=2)
        await asyncio.to_thread(Path(args.json).write_text, text)
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="an external broker (the broker scenario is then "
                        "not possible)")
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=list(SCENARIOS))
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load per "
                        "fault scenario")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s in the fault "
                        "scenarios")
    parser.add_argument("--drain", type=float, default=180.0)
    parser.add_argument("--kill-every", type=float, default=5.0)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="model server latency")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--sustained-duration", type=float, default=600.0)
    parser.add_argument("--sustained-rate", type=float, default=None)
    parser.add_argument("--ramp", type=lambda s: [float(x) for x in s.split(",")],
                        default=[10.0, 20.0, 40.0, 80.0])
    parser.add_argument("--ramp-duration", type=float, default=20.0)
    parser.add_argument("--json", help="also write the reports here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
