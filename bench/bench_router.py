"""Router stage benchmark: latency at a fixed rate and the sustained ceiling, beside the
classifier alone, on this machine, in one run. Prints numbers; not a test.

    .venv/bin/python bench/bench_router.py --bootstrap 127.0.0.1:9092 --rate 200 --seconds 20

Without ``--bootstrap`` it starts a throwaway Apache Kafka (``deploy.broker``) first.

Latency is measured with Kafka timestamps, both set on this host: the request record's
CreateTime (set when the bench produced it) to the scored record's CreateTime (set when the
router produced it). The router runs as its own process (``python -m streams``); the
breakdown comes from its Prometheus metrics.

``--answers`` also answers every scored request on ``llm.responses`` at once (an instant
worker), so that the router's outcome agents and its ``users`` table (whose changelog every
replica reads) carry traffic during the measurement, as they do in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_broker, free_port  # noqa: E402
from deploy.admin import create_all_topics, kafka_client_kwargs  # noqa: E402
from schemas.codec import decode, encode  # noqa: E402
from schemas.messages import (  # noqa: E402
    ChatMessage,
    RouteInfo,
    RouteRequest,
    RouteResponse,
    ScoredRequest,
)
from schemas.settings import (  # noqa: E402
    ClassifierSettings,
    KafkaSettings,
    Settings,
    TopicSettings,
)

SAMPLES = ROOT / "classifier_onnx" / "model" / "sample_prompts.jsonl"


def load_samples() -> list[dict[str, Any]]:
    """The bundled sample traffic, shuffled with a fixed seed: the file lists its prompts
    source by source, and sent in that order the long ones arrive in runs (the 128-token
    prompts cluster in two stretches of ~60), which measures those runs, not a mixed stream."""
    lines = SAMPLES.read_text().splitlines()
    samples = [json.loads(line) for line in lines if line.strip()]
    random.Random(7).shuffle(samples)
    return samples


def make_request(sample: dict[str, Any]) -> RouteRequest:
    return RouteRequest(
        user_id=f"u-{uuid.uuid4().hex[:4]}",
        conversation_id=f"c-{uuid.uuid4().hex[:12]}",
        tools=sample.get("tools") or [],
        messages=[ChatMessage(role=m["role"], content=m["content"]) for m in sample["messages"]],
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def classifier_alone(
    batch_max: int, seconds: float, classifier: ClassifierSettings
) -> dict[str, float]:
    """The classifier as the router loads it (``classifier``), scoring full batches."""
    from streams.scorer import load_scorer, render

    scorer = load_scorer(classifier)
    texts = [render(make_request(s), turn=1) for s in load_samples()]
    scorer.score(texts[:batch_max])
    done, batches, i = 0, 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = [texts[(i + k) % len(texts)] for k in range(batch_max)]
        scorer.score(batch)
        i += batch_max
        done += batch_max
        batches += 1
    elapsed = time.perf_counter() - started
    return {"per_s": done / elapsed, "ms_per_batch": 1000 * elapsed / batches}


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")) and not sample.labels:
                out[sample.name] = sample.value
    return out


def breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def mean(name: str) -> float:
        n = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
        s = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
        return s / n if n else float("nan")

    return {
        "fetch+batching wait ms (per request)": 1000 * mean("router_wait_seconds"),
        "  fetch: produced -> read by the router": 1000 * mean("router_fetch_seconds"),
        "  batching: read -> batch start": 1000 * mean("router_batching_seconds"),
        "scoring ms (per batch)": 1000 * mean("router_scoring_seconds"),
        "batch size (mean)": mean("router_batch_size"),
        "produce+ack ms (per batch)": 1000 * mean("router_produce_seconds"),
        "produced->routed ms (per request)": 1000 * mean("router_stage_seconds"),
    }


def answer(scored: ScoredRequest) -> RouteResponse:
    """What a worker whose model answered at once would publish for ``scored``."""
    request = scored.request
    return RouteResponse(
        request_id=request.id, conversation_id=request.conversation_id,
        user_id=request.user_id, content="ok",
        route=RouteInfo(tier=scored.tier, model=scored.model or "bench", category=scored.category,
                        score=scored.score, reason=scored.reason, tiers_tried=[scored.tier],
                        attempts=[], total_latency_ms=0.0),
    )


class Bench:
    def __init__(self, settings: Settings, *, answers: bool = False) -> None:
        self.settings = settings
        self.answers = answers
        self.kafka = settings.kafka
        self.tier_topics = [settings.topics.tier(t) for t in settings.chain]
        self.produced: dict[str, float] = {}
        self.scored: dict[str, float] = {}
        self.producer = AIOKafkaProducer(**kafka_client_kwargs(self.kafka), linger_ms=0)
        self.consumer = AIOKafkaConsumer(
            *self.tier_topics, **kafka_client_kwargs(self.kafka),
            group_id=f"bench-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
            enable_auto_commit=False, fetch_max_wait_ms=50,
        )
        self._reader: asyncio.Task[None] | None = None
        self.worst_by_second: list[int] = []

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        await self.consumer.stop()
        await self.producer.stop()

    async def _read(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for rec in records:
                    if self.answers:
                        scored = decode(ScoredRequest, rec.value)
                        rid = scored.request.id
                        await self.producer.send(
                            self.settings.topics.responses, encode(answer(scored)),
                            key=rid.encode(),
                        )
                    else:
                        rid = json.loads(rec.value)["request"]["id"]
                    self.scored[rid] = rec.timestamp / 1000.0

    async def send(self, request: RouteRequest) -> asyncio.Future[Any]:
        fut = await self.producer.send(
            self.settings.topics.requests, encode(request),
            key=request.conversation_id.encode(),
        )

        def done(f: asyncio.Future[Any]) -> None:
            if not f.exception():
                self.produced[request.id] = f.result().timestamp / 1000.0

        fut.add_done_callback(done)
        return fut

    async def wait_scored(self, ids: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        # The reader task fills self.scored; polling keeps the bench simple.
        while time.monotonic() < deadline and not all(i in self.scored for i in ids):  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def fixed_rate(self, rate: float, seconds: float) -> dict[str, float]:
        samples = load_samples()
        n = int(rate * seconds)
        ids = []
        futures = []
        started = time.monotonic()
        for i in range(n):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            req = make_request(samples[i % len(samples)])
            ids.append(req.id)
            futures.append(await self.send(req))
        await asyncio.gather(*futures)
        await self.wait_scored(ids, 60)
        lat = [1000 * (self.scored[i] - self.produced[i]) for i in ids if i in self.scored]
        stamps = [self.scored[i] for i in ids if i in self.scored]
        # The worst latency of each second of sending: a tail spread evenly is queueing
        # noise, one clustered in a few seconds is a stall (GC, commit, rebalance).
        t0 = min(self.produced[i] for i in ids)
        worst: dict[int, float] = {}
        for i in ids:
            if i in self.scored:
                second = int(self.produced[i] - t0)
                worst[second] = max(worst.get(second, 0.0), self.scored[i] - self.produced[i])
        self.worst_by_second = [round(1000 * worst[k]) for k in sorted(worst)]
        return {
            "sent": n, "scored": len(lat),
            "p50_ms": pct(lat, 0.50), "p95_ms": pct(lat, 0.95), "p99_ms": pct(lat, 0.99),
            "max_ms": max(lat), "mean_ms": statistics.fmean(lat),
            "throughput_per_s": len(stamps) / max(max(stamps) - min(stamps), 1e-9),
        }

    async def ceiling(self, n: int) -> dict[str, float]:
        samples = load_samples()
        reqs = [make_request(samples[i % len(samples)]) for i in range(n)]
        futures = [await self.send(r) for r in reqs]
        await asyncio.gather(*futures)
        ids = [r.id for r in reqs]
        await self.wait_scored(ids, 120)
        stamps = sorted(self.scored[i] for i in ids if i in self.scored)
        sent = sorted(self.produced[i] for i in ids)
        return {
            "requests": n, "scored": len(stamps),
            "produce_span_s": sent[-1] - sent[0],
            "scored_span_s": stamps[-1] - stamps[0],
            "throughput_per_s": len(stamps) / max(stamps[-1] - stamps[0], 1e-9),
        }


def start_broker() -> tuple[Any, str]:
    broker = bench_broker(Path(tempfile.mkdtemp(prefix="bench-kafka-")), heap_mb=512)
    broker.start()
    return broker, broker.bootstrap_servers


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    metrics_port = free_port()
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, client_id="bench"),
        topics=TopicSettings(
            requests=f"{prefix}llm.requests", tier_prefix=f"{prefix}llm.tier.",
            uproute=f"{prefix}llm.uproute", responses=f"{prefix}llm.responses",
            deadletter=f"{prefix}llm.deadletter", partitions=args.partitions,
        ),
        router={"app_id": f"{prefix}router", "batch_max": args.batch_max,
                "batch_within_ms": args.within_ms, "web_port": 0, "metrics_port": metrics_port},
        classifier={"threads": args.threads, "spin": not args.no_spin,
                    "model_dir": args.model_dir},
    )
    await create_all_topics(settings)

    print(f"classifier alone ({args.classifier_seconds:.0f} s, batches of {args.batch_max}, "
          f"{args.threads} thread):")
    alone = classifier_alone(args.batch_max, args.classifier_seconds, settings.classifier)
    print(f"  {alone['per_s']:.0f} requests/s, {alone['ms_per_batch']:.1f} ms per batch")

    config = Path(tempfile.mkdtemp()) / "router.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(
        mode="json", include={"kafka", "topics", "router", "classifier"})))
    env = {**os.environ, "LLM_ROUTER_CONFIG": str(config), "LLM_ROUTER_LOG_LEVEL": "WARNING"}
    router = await asyncio.create_subprocess_exec(sys.executable, "-m", "streams", env=env,
                                                  cwd=ROOT)
    bench = Bench(settings, answers=args.answers)
    try:
        await bench.start()
        # Warm up: the router is ready when a request comes back scored.
        warm = make_request(load_samples()[0])
        await bench.send(warm)
        await bench.wait_scored([warm.id], 120)
        if warm.id not in bench.scored:
            raise SystemExit("router did not score the warm-up request within 120 s")
        for _ in range(3):
            await bench.fixed_rate(50, 1)
        if args.warmup_s > 0:
            # The first seconds after the router starts are slower than the rest (at 60/s the
            # worst latency of each second fell from 430 to ~40 ms over the first 15 s):
            # shown here, and kept out of the steady-state numbers below.
            warm_stats = await bench.fixed_rate(args.rate, args.warmup_s)
            print(f"\nwarm-up at {args.rate:.0f} requests/s for {args.warmup_s:.0f} s "
                  "(not counted below):")
            print("  " + ", ".join(
                f"{k} {warm_stats[k]:.0f}" for k in ("p50_ms", "p99_ms", "max_ms")))
            print(f"  worst latency of each second sent (ms): {bench.worst_by_second}")

        before = scrape(metrics_port)
        fixed = await bench.fixed_rate(args.rate, args.seconds)
        after = scrape(metrics_port)
        print(f"\nrouter stage at {args.rate:.0f} requests/s for {args.seconds:.0f} s "
              "(request produced -> scored request on its tier topic):")
        for key, value in fixed.items():
            print(f"  {key:>18}: {value:.1f}" if isinstance(value, float) else
                  f"  {key:>18}: {value}")
        print("  where the time goes (means):")
        for key, value in breakdown(before, after).items():
            print(f"    {key}: {value:.2f}")
        print(f"  worst latency of each second sent (ms): {bench.worst_by_second}")

        before = scrape(metrics_port)
        ceiling = await bench.ceiling(args.ceiling_n)
        after = scrape(metrics_port)
        print(f"\nsustained ceiling ({args.ceiling_n} requests produced at once):")
        for key, value in ceiling.items():
            print(f"  {key:>18}: {value:.2f}" if isinstance(value, float) else
                  f"  {key:>18}: {value}")
        for key, value in breakdown(before, after).items():
            print(f"    {key}: {value:.2f}")
        ratio = ceiling["throughput_per_s"] / alone["per_s"]
        print(f"\nceiling / classifier alone = {ratio:.2f} (goal >= 0.8); "
              f"p99 at {args.rate:.0f}/s = {fixed['p99_ms']:.1f} ms (goal <= 50)")
    finally:
        await bench.stop()
        router.terminate()
        try:
            await asyncio.wait_for(router.wait(), 30)
        except TimeoutError:
            router.kill()
            await router.wait()




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="a running broker; default: start one")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ceiling-n", type=int, default=4000)
    parser.add_argument("--batch-max", type=int, default=32)
    parser.add_argument("--within-ms", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-spin", action="store_true",
                        help="onnxruntime threads do not spin-wait (classifier.spin: false)")
    parser.add_argument("--warmup-s", type=float, default=20.0,
                        help="send at --rate this long first and leave it out of the numbers")
    parser.add_argument("--classifier-seconds", type=float, default=5.0)
    parser.add_argument("--model-dir", type=Path, help="classifier model folder; default: shipped")
    parser.add_argument("--answers", action="store_true",
                        help="answer every scored request on llm.responses (an instant worker)")
    args = parser.parse_args()
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker, bootstrap = start_broker()
    try:
        asyncio.run(run(args, bootstrap))
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
