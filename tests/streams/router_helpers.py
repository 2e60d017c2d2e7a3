"""Helpers of the router stream tests: a deterministic scorer, a fake sink, Kafka clients.

Imported by name (``router_helpers``): ``tests/`` is not a package.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy.admin import create_all_topics, kafka_client_kwargs
from schemas.messages import ChatMessage, RouteRequest
from schemas.settings import Settings

CATEGORIES = ("simple", "general", "reasoning", "code", "agent")


@dataclass(frozen=True)
class FakeScore:
    complexity: float
    category: str
    probabilities: dict[str, float]
    confidence: float


def fake_score(complexity: float, category: str = "general", confidence: float = 0.9) -> FakeScore:
    rest = (1.0 - confidence) / (len(CATEGORIES) - 1)
    probs = {c: (confidence if c == category else rest) for c in CATEGORIES}
    return FakeScore(complexity, category, probs, confidence)


_TAG = re.compile(r"\[score=([0-9.]+)(?: cat=(\w+))?(?: conf=([0-9.]+))?\]")


class FakeScorer:
    """Reads ``[score=0.42 cat=code conf=0.8]`` from the text; default score 0.1, general.

    Counts calls and texts so tests can check batching.
    """

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, texts: Sequence[str]) -> list[FakeScore]:
        self.calls.append(len(texts))
        out = []
        for text in texts:
            m = _TAG.search(text)
            if m is None:
                out.append(fake_score(0.1))
                continue
            out.append(fake_score(
                float(m.group(1)), m.group(2) or "general", float(m.group(3) or 0.9)
            ))
        return out


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class FakeSink:
    """Collects what the stages publish."""

    sent: list[Sent] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(
        self, topic: str, *, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        self.sent.append(Sent(topic, key, value, list(headers)))
        self.arrived.set()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        async def wait() -> None:
            while len(self.sent) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), timeout_s)


def request(
    text: str = "hello",
    *,
    user: str = "u-1",
    conversation: str | None = None,
    **fields: Any,
) -> RouteRequest:
    return RouteRequest(
        user_id=user,
        conversation_id=conversation or f"c-{uuid.uuid4().hex[:8]}",
        messages=[ChatMessage(role="user", content=text)],
        **fields,
    )


async def create_all(settings: Settings) -> None:
    await asyncio.wait_for(create_all_topics(settings), timeout=60)


class Kafka:
    """A producer and consumers for one test, all closed at teardown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self.consumers: list[AIOKafkaConsumer] = []

    async def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if self.producer is None:
            self.producer = AIOKafkaProducer(**kafka_client_kwargs(self.settings.kafka))
            await asyncio.wait_for(self.producer.start(), 30)
        await asyncio.wait_for(
            self.producer.send_and_wait(topic, value, key=key, headers=headers), 30
        )

    async def produce_many(self, items: Sequence[tuple[str, bytes, bytes | None]]) -> None:
        if self.producer is None:
            self.producer = AIOKafkaProducer(**kafka_client_kwargs(self.settings.kafka))
            await asyncio.wait_for(self.producer.start(), 30)
        futures = [await self.producer.send(t, v, key=k) for t, v, k in items]
        await asyncio.wait_for(asyncio.gather(*futures), 60)

    async def consume(self, topics: Sequence[str], count: int, timeout_s: float = 60.0,
                      settle_s: float = 0.0) -> list[Any]:
        """Read ``count`` records from ``topics`` (then ``settle_s`` more for extras)."""
        consumer = AIOKafkaConsumer(
            *topics,
            **kafka_client_kwargs(self.settings.kafka),
            group_id=f"read-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.consumers.append(consumer)
        await asyncio.wait_for(consumer.start(), 30)
        records: list[Any] = []

        async def read(until: int | None) -> None:
            while until is None or len(records) < until:
                batch = await consumer.getmany(timeout_ms=200)
                for recs in batch.values():
                    records.extend(recs)

        await asyncio.wait_for(read(count), timeout_s)
        if settle_s:
            try:
                await asyncio.wait_for(read(None), settle_s)
            except TimeoutError:
                pass
        return records

    async def close(self) -> None:
        for consumer in self.consumers:
            await asyncio.wait_for(consumer.stop(), 30)
        if self.producer is not None:
            await asyncio.wait_for(self.producer.stop(), 30)
