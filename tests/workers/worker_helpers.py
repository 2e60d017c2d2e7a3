"""Helpers of the tier worker tests: requests, producing, reading topics, worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from deploy.admin import kafka_client_kwargs
from schemas.codec import encode
from schemas.messages import ChatMessage, FormatSpec, RouteRequest, ScoredRequest
from schemas.settings import KafkaSettings, Settings

ROOT = Path(__file__).resolve().parents[2]


def scored_request(
    *,
    prompt: str = "What are your store hours?",
    conversation_id: str | None = None,
    model: str | None = None,
    score: float = 0.2,
    tier: str = "fast",
    format: FormatSpec | None = None,
    deadline: datetime | None = None,
    max_output_tokens: int | None = None,
    attempts: list[Any] | None = None,
) -> ScoredRequest:
    request = RouteRequest(
        user_id="u-1",
        conversation_id=conversation_id or f"c-{uuid.uuid4().hex[:10]}",
        messages=[ChatMessage(role="user", content=prompt)],
        format=format or FormatSpec(),
        deadline=deadline,
        max_output_tokens=max_output_tokens,
    )
    return ScoredRequest(
        request=request,
        score=score,
        category="faq",
        tier=tier,
        model=model,
        reason="score",
        attempts=attempts or [],
    )


async def produce(
    kafka: KafkaSettings,
    topic: str,
    values: list[tuple[bytes | None, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Publish ``(key, value)`` pairs and wait for every acknowledgement."""
    producer = AIOKafkaProducer(**kafka_client_kwargs(kafka), acks="all")
    await asyncio.wait_for(producer.start(), 30)
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers) for key, value in values
        ]
        await asyncio.wait_for(asyncio.gather(*futures), 30)
    finally:
        await asyncio.wait_for(producer.stop(), 30)


async def produce_scored(
    kafka: KafkaSettings,
    topic: str,
    requests: list[ScoredRequest],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    await produce(
        kafka,
        topic,
        [(r.request.conversation_id.encode(), encode(r)) for r in requests],
        headers,
    )


async def read_topic(
    kafka: KafkaSettings,
    topic: str,
    count: int,
    *,
    timeout_s: float = 30.0,
    settle_s: float = 0.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning once there are at least ``count``.

    ``settle_s`` keeps reading that long after ``count`` is reached, so that a test can assert
    nothing more arrived. TimeoutError (with what was read) if ``count`` is not reached.
    """
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(kafka), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await asyncio.wait_for(consumer.start(), 30)
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = await asyncio.wait_for(_partitions(consumer, topic), 30)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)

        async def read(until: Callable[[], bool]) -> None:
            while not until():
                batch = await consumer.getmany(timeout_ms=100)
                for rows in batch.values():
                    records.extend(rows)

        try:
            await asyncio.wait_for(read(lambda: len(records) >= count), timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"{topic}: {len(records)} of {count} records after {timeout_s}s"
            ) from None
        if settle_s > 0:
            with_settle = asyncio.get_running_loop().time() + settle_s
            await asyncio.wait_for(
                read(lambda: asyncio.get_running_loop().time() >= with_settle), settle_s + 5
            )
    finally:
        await asyncio.wait_for(consumer.stop(), 30)
    return records


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for ``python -m workers`` that rebuilds ``settings`` (no secrets)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    dumped = settings.model_dump(mode="json")
    for name in ("kafka", "topics", "tiers", "chain", "router", "workers"):
        value = dumped[name]
        env[f"LLM_ROUTER_{name.upper()}"] = json.dumps(value)
    env["LLM_ROUTER_LOG_LEVEL"] = "INFO"
    env["PYTHONPATH"] = str(ROOT)
    return env


async def start_worker_process(
    settings: Settings,
    log: Path,
    tier: str = "fast",
    *extra: str,
    metrics_port: int | None = None,
) -> asyncio.subprocess.Process:
    """``python -m workers --tier TIER`` with ``settings`` from the environment.

    Its log goes to ``log`` (a pipe nobody reads could fill up and block the worker).
    """
    env = worker_env(settings)
    if metrics_port is not None:
        workers = settings.workers.model_dump(mode="json")
        workers["metrics_port"] = metrics_port
        env["LLM_ROUTER_WORKERS"] = json.dumps(workers)
    with log.open("ab") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers", "--tier", tier, *extra,
            env=env, cwd=str(ROOT),
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )
