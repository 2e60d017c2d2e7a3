"""RecoveringProducer against the real broker: a producer id the broker no longer accepts is
replaced, and the record is written once.

The broker really answers OUT_OF_ORDER_SEQUENCE_NUMBER here: the producer's next sequence
number is moved past the one the broker expects, as aiokafka does when a batch expires while
its partition has no leader (a broker restarting: CI once lost a request that way, its worker
retrying one publish for good), so every batch after it is refused.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import OutOfOrderSequenceNumber

from deploy.admin import kafka_client_kwargs
from deploy.producer import RecoveringProducer
from schemas.settings import KafkaSettings
from tests.test_broker import consume_all, create_topic

pytestmark = [pytest.mark.integration]


@pytest.fixture
async def topic(kafka_settings: KafkaSettings) -> str:
    """A fresh one-partition topic."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    await asyncio.wait_for(create_topic(kafka_settings, name), 30)
    return name


def idempotent(kafka: KafkaSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**kafka_client_kwargs(kafka), acks="all", enable_idempotence=True)


def desynchronise(producer: AIOKafkaProducer, topic: str) -> None:
    """Skip sequence numbers: the broker refuses this producer id's next batch."""
    producer._txn_manager.increment_sequence_number(TopicPartition(topic, 0), 5)


async def test_a_plain_idempotent_producer_stays_out_of_step(
    kafka_settings: KafkaSettings, topic: str
) -> None:
    # The failure RecoveringProducer exists for: aiokafka never recovers by itself.
    producer = idempotent(kafka_settings)
    await asyncio.wait_for(producer.start(), 30)
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"first", partition=0), 30)
        desynchronise(producer, topic)
        for value in (b"second", b"third"):
            with pytest.raises(OutOfOrderSequenceNumber):
                await asyncio.wait_for(producer.send_and_wait(topic, value, partition=0), 30)
    finally:
        await producer.stop()


async def test_an_out_of_step_producer_is_replaced_and_the_record_written_once(
    kafka_settings: KafkaSettings, topic: str
) -> None:
    producer = RecoveringProducer(lambda: idempotent(kafka_settings))
    async with producer:
        await asyncio.wait_for(producer.send_and_wait(topic, b"first"), 30)
        first = producer.producer
        desynchronise(first, topic)
        # Several senders see the refusal at once: one replacement serves them all.
        await asyncio.wait_for(
            asyncio.gather(*(producer.send_and_wait(topic, b"after-%d" % i) for i in range(3))),
            60,
        )
        assert producer.replacements == 1
        assert producer.producer is not first
        await asyncio.wait_for(producer.send_and_wait(topic, b"last"), 30)
    values = await asyncio.wait_for(consume_all(kafka_settings, topic, 5), 60)
    assert sorted(values) == [b"after-0", b"after-1", b"after-2", b"first", b"last"]


async def test_a_producer_whose_sender_died_is_replaced(
    kafka_settings: KafkaSettings, topic: str
) -> None:
    producer = RecoveringProducer(lambda: idempotent(kafka_settings))
    async with producer:
        await asyncio.wait_for(producer.send_and_wait(topic, b"first"), 30)
        dead = producer.producer
        dead._sender.sender_task.cancel()
        await asyncio.sleep(0)
        await asyncio.wait_for(producer.send_and_wait(topic, b"second"), 30)
        assert producer.replacements == 1
    values = await asyncio.wait_for(consume_all(kafka_settings, topic, 2), 60)
    assert values == [b"first", b"second"]


async def test_stop_is_safe_twice_and_a_stopped_producer_refuses_to_send(
    kafka_settings: KafkaSettings,
) -> None:
    producer = RecoveringProducer(lambda: idempotent(kafka_settings))
    await asyncio.wait_for(producer.start(), 30)
    await producer.stop()
    await producer.stop()
    with pytest.raises(RuntimeError, match="not started"):
        await producer.send_and_wait("anything", b"x")
