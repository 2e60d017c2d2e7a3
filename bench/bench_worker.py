"""Benchmark: one tier worker process against a model server with a fixed latency.

Prints numbers; it is not a timed test. What it measures, in one run on one machine:

* **baseline**: ``--requests`` direct calls with one pooled ``httpx.AsyncClient`` (the
  connection pool the worker uses, ``--http-client``), at most
  ``--concurrency`` at once, from this process to the server: latency minus the server's
  fixed latency is the cost of the HTTP path alone.
* **worker**: the same number of ScoredRequests produced to a tier topic first, then one
  ``python -m workers --tier bench --concurrency C`` process drains them. Reported:
  peak in-flight (the worker's gauge, sampled, and the server's own count of concurrent
  calls), throughput (responses per second between the first and the last response), and
  per-request overhead over the server's latency:

  - *call*: the attempt's ``latency_ms`` (the worker's model call as the worker timed it)
    minus the server latency;
  - *processing*: from the attempt's start to the response handed to the producer (the
    response record's CreateTime): the call plus validation and building the response.

Run (starts a broker with a temporary data dir on free ports, unless ``--bootstrap``)::

    .venv/bin/python bench/bench_worker.py --requests 10000 --concurrency 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import IO, Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from httpx_aiohttp import AiohttpTransport

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_broker, free_port  # noqa: E402
from deploy.admin import create_topics, kafka_client_kwargs  # noqa: E402
from schemas.codec import decode, encode  # noqa: E402
from schemas.messages import (  # noqa: E402
    ChatMessage,
    RouteRequest,
    RouteResponse,
    ScoredRequest,
    UpRouteEvent,
)
from schemas.settings import KafkaSettings, Settings, TopicSettings  # noqa: E402


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def start_server(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.testing", "--port", "0", "--latency-ms", str(latency_ms)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (\S+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"model server did not start: {line!r}")
    return process, match.group(1)


def stop_server(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    return out.strip()


async def baseline(
    url: str, requests: int, concurrency: int, latency_s: float, http_client: str
) -> dict[str, float]:
    body = {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "What are your store hours?"}],
        "max_tokens": 64,
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(concurrency)
    # The same client the worker builds for its tier (see workers.providers.HTTPProvider).
    transport = None
    if http_client == "aiohttp":
        transport = AiohttpTransport(limits=limits, trust_env=False)
    async with httpx.AsyncClient(
        limits=limits, timeout=30.0, trust_env=False, transport=transport
    ) as client:

        async def one() -> None:
            async with semaphore:
                started = time.perf_counter()
                response = await client.post(f"{url}/chat/completions", json=body)
                response.raise_for_status()
                response.json()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(requests))), 600)
        elapsed = time.perf_counter() - started
    overhead = [(x - latency_s) * 1000 for x in latencies]
    return {
        "throughput": requests / elapsed,
        "p50": pct(overhead, 50),
        "p99": pct(overhead, 99),
        "max": max(overhead),
    }


async def produce_requests(kafka: KafkaSettings, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(**kafka_client_kwargs(kafka), acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = []
        for i in range(count):
            request = RouteRequest(
                user_id="bench", conversation_id=f"c-{i}",
                messages=[ChatMessage(role="user", content="What are your store hours?")],
            )
            scored = ScoredRequest(
                request=request, score=0.2, category="faq", tier="bench", reason="score"
            )
            futures.append(await producer.send(topic, encode(scored), key=f"c-{i}".encode()))
        await asyncio.wait_for(asyncio.gather(*futures), 120)
    finally:
        await producer.stop()


async def sample_in_flight(port: int, stop: asyncio.Event, peaks: list[float]) -> None:
    pattern = re.compile(r"^llm_router_worker_in_flight\{[^}]*\} (\S+)$", re.M)
    async with httpx.AsyncClient(trust_env=False) as client:
        while not stop.is_set():
            try:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=2)).text
                for value in pattern.findall(text):
                    peaks.append(float(value))
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)


async def wait_healthy(port: int, timeout_s: float = 120) -> None:
    async def poll() -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    if response.status_code == 200 and response.json()["assigned"]:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout_s)


async def read_outcomes(
    kafka: KafkaSettings, topics: TopicSettings, count: int, timeout_s: float
) -> tuple[list[tuple[int, RouteResponse]], Counter[str]]:
    """Responses (with their CreateTime) and up-routes by cause, until ``count`` ids have one."""
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(kafka), group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    rows: list[tuple[int, RouteResponse]] = []
    uproutes: Counter[str] = Counter()
    seen: set[str] = set()
    try:
        tps = []
        for topic in (topics.responses, topics.uproute):
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            tps += [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def read() -> None:
            while len(seen) < count:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, records in batch.items():
                    for record in records:
                        if tp.topic == topics.uproute:
                            event = decode(UpRouteEvent, record.value)
                            uproutes[event.cause] += 1
                            seen.add(event.request_id)
                            continue
                        response = decode(RouteResponse, record.value)
                        seen.add(response.request_id)
                        rows.append((record.timestamp, response))

        try:
            await asyncio.wait_for(read(), timeout_s)
        except TimeoutError:
            print(f"gave up after {timeout_s:.0f} s: {count - len(seen)} requests without outcome")
    finally:
        await consumer.stop()
    return rows, uproutes


def open_log() -> IO[bytes]:
    """The worker's log: ``BENCH_WORKER_LOG`` (level ``BENCH_LOG_LEVEL``), else discarded."""
    return open(os.environ.get("BENCH_WORKER_LOG", os.devnull), "wb")  # noqa: SIM115


async def bench_worker(
    settings: Settings, requests: int, concurrency: int, latency_s: float
) -> dict[str, Any]:
    topics = settings.topics
    await produce_requests(settings.kafka, topics.tier("bench"), requests)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    dumped = settings.model_dump(mode="json")
    dumped["workers"]["metrics_port"] = port
    for name in ("kafka", "topics", "tiers", "chain", "router", "workers"):
        env[f"LLM_ROUTER_{name.upper()}"] = json.dumps(dumped[name])
    env["LLM_ROUTER_LOG_LEVEL"] = os.environ.get("BENCH_LOG_LEVEL", "WARNING")
    with open_log() as log:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers", "--tier", "bench", "--concurrency", str(concurrency),
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )
        stop = asyncio.Event()
        peaks: list[float] = []
        sampler = asyncio.create_task(sample_in_flight(port, stop, peaks))
        try:
            await wait_healthy(port)
            rows, uproutes = await read_outcomes(settings.kafka, topics, requests, 600)
        finally:
            stop.set()
            await sampler
            worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.wait(), 60)
            except TimeoutError:
                worker.kill()
                await worker.wait()
    if worker.returncode != 0:
        print(f"worker exited with {worker.returncode} (log: BENCH_WORKER_LOG=path)")
    timestamps = [ts for ts, _ in rows]
    elapsed_s = (max(timestamps) - min(timestamps)) / 1000 or 1e-3
    call = [r.route.attempts[-1].latency_ms - latency_s * 1000 for _, r in rows]
    processing = [
        ts - r.route.attempts[-1].started_at.timestamp() * 1000 - latency_s * 1000
        for ts, r in rows
    ]
    unique = len({r.request_id for _, r in rows})
    return {
        "responses": len(rows),
        "unique": unique,
        "throughput": unique / elapsed_s,
        "peak_in_flight": max(peaks, default=0.0),
        "uproutes": uproutes,
        "call_p50": pct(call, 50),
        "call_p99": pct(call, 99),
        "proc_p50": pct(processing, 50),
        "proc_p99": pct(processing, 99),
    }


async def main_async(args: argparse.Namespace) -> None:
    latency_s = args.latency_ms / 1000
    broker = None
    tmp = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-kafka-")
        broker = bench_broker(Path(tmp.name), heap_mb=1024)
        print("starting broker…", flush=True)
        await asyncio.to_thread(broker.start)
        bootstrap = broker.bootstrap_servers
    server, url = start_server(args.latency_ms)
    try:
        prefix = f"bench-{uuid.uuid4().hex[:6]}."
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap),
            topics=TopicSettings(
                requests=f"{prefix}llm.requests", tier_prefix=f"{prefix}llm.tier.",
                uproute=f"{prefix}llm.uproute", responses=f"{prefix}llm.responses",
                deadletter=f"{prefix}llm.deadletter", partitions=args.partitions,
            ),
            # A burst of thousands of new connections to one Python server takes seconds to be
            # accepted: the connect phase gets the whole call's budget.
            tiers={"bench": {"base_url": url, "model": "bench-model", "timeout_s": 30.0,
                             "connect_timeout_s": 30.0,
                             "concurrency": args.concurrency,
                             "http_client": args.http_client}},
            chain=("bench",),
            router={"thresholds": (), "app_id": prefix.rstrip(".")},
            workers={"commit_interval_ms": 500},
        )
        await create_topics(settings.kafka, settings.topics, settings.chain)
        print(f"baseline: {args.requests} direct httpx calls, {args.concurrency} at once…",
              flush=True)
        base = await baseline(url, args.requests, args.concurrency, latency_s, args.http_client)
        print(f"worker: {args.requests} requests through one worker process…", flush=True)
        result = await bench_worker(settings, args.requests, args.concurrency, latency_s)
    finally:
        served = stop_server(server)
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        if tmp is not None:
            tmp.cleanup()
    server_peak = re.findall(r"peak_in_flight=(\d+)", served)

    print()
    print(f"server latency {args.latency_ms:.0f} ms, concurrency {args.concurrency}, "
          f"connection pool {args.http_client}, "
          f"{args.requests} requests, {args.partitions} partitions, {os.cpu_count()} CPUs")
    print(f"server: {served.splitlines()[-1] if served else '?'}")
    print(f"{'':34} {'throughput/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'direct httpx (overhead)':34} {base['throughput']:12.0f} "
          f"{base['p50']:8.2f} {base['p99']:8.2f}")
    print(f"{'worker model call (overhead)':34} {result['throughput']:12.0f} "
          f"{result['call_p50']:8.2f} {result['call_p99']:8.2f}")
    print(f"{'worker call+validate+build':34} {'':12} "
          f"{result['proc_p50']:8.2f} {result['proc_p99']:8.2f}")
    print(f"worker over direct httpx: p50 {result['call_p50'] - base['p50']:+.2f} ms, "
          f"p99 {result['call_p99'] - base['p99']:+.2f} ms (model call); "
          f"p99 {result['proc_p99'] - base['p99']:+.2f} ms (call+validate+build)")
    print(f"worker peak in-flight (sampled gauge): {result['peak_in_flight']:.0f}; "
          f"server peak concurrent calls (whole run): {server_peak[-1] if server_peak else '?'}")
    print(f"responses {result['responses']:.0f}, unique {result['unique']:.0f}; "
          f"up-routed {sum(result['uproutes'].values())} {dict(result['uproutes'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--http-client", choices=("aiohttp", "httpx"), default="aiohttp",
        help="the connection pool under httpx, for the worker and the baseline alike",
    )
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
