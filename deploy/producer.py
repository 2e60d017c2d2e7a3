"""An idempotent producer that survives losing step with the broker.

aiokafka's idempotent producer can fall out of step with the broker and has no way back. A
batch that expires while its partition has no leader (a broker still starting, after a
restart) is given a sequence number when it is failed, although the broker never sees it; from
then on every batch to that partition is answered ``OUT_OF_ORDER_SEQUENCE_NUMBER``, until the
process restarts (aiokafka 0.14 ``MessageAccumulator.drain_by_nodes``; aio-libs/aiokafka#1017;
the Java client bumps its epoch instead, KIP-360). ``UNKNOWN_PRODUCER_ID`` and a dead sender
task end the same way. :class:`RecoveringProducer` replaces the producer with a fresh one (a
new producer id, so the sequences start again) and sends again. Delivery stays at-least-once:
a batch the broker took just before the replacement may be written twice, which the workers
and :class:`~streams.client.RouterClient` already drop by request id.

Example::

    producer = RecoveringProducer(lambda: AIOKafkaProducer(**kwargs, enable_idempotence=True))
    async with producer:
        await producer.send_and_wait("llm.requests", b"...", key=b"conversation-1")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.structs import RecordMetadata

__all__ = ["RecoveringProducer"]

logger = logging.getLogger(__name__)

# Errors after which this producer id cannot send again: only a new producer recovers.
_OUT_OF_STEP: tuple[type[KafkaError], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
)
# Bound on how long stopping a replaced producer may take (it flushes what it still holds).
_CLOSE_TIMEOUT_S = 10.0


class RecoveringProducer:
    """``send_and_wait`` on an aiokafka producer made by ``factory``, replaced when it is out
    of step with the broker (see the module docstring); ``replacements`` counts those.

    ``resends`` bounds the sends of one record on fresh producers after such an error; other
    errors (the broker away, a timeout) are raised for the caller's own retry policy.
    """

    def __init__(self, factory: Callable[[], AIOKafkaProducer], *, resends: int = 3) -> None:
        self._factory = factory
        self._resends = resends
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self.replacements = 0

    @property
    def producer(self) -> AIOKafkaProducer:
        """The aiokafka producer in use now."""
        if self._producer is None:
            raise RuntimeError("the producer is not started")
        return self._producer

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = self._factory()
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        """Stop the producer in use and any replaced one still closing. Safe to call twice."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def __aenter__(self) -> RecoveringProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: Any = None,
    ) -> RecordMetadata:
        """Send one record and wait for the broker's acknowledgement."""
        for resend in range(self._resends + 1):
            producer = self.producer
            if _sender_dead(producer):
                await self._replace(producer, "its sender task has stopped")
                continue
            try:
                return await producer.send_and_wait(topic, value, key=key, headers=headers)
            except _OUT_OF_STEP as exc:
                if resend == self._resends:
                    raise
                await self._replace(producer, repr(exc))
            except KafkaError:
                if not _sender_dead(producer) or resend == self._resends:
                    raise
                await self._replace(producer, "its sender task has stopped")
        raise KafkaError(f"no fresh producer could send to {topic}")

    async def _replace(self, failed: AIOKafkaProducer, why: str) -> None:
        """Swap ``failed`` for a fresh producer (once, however many senders saw it fail)."""
        async with self._lock:
            if self._producer is not failed:
                return  # another send replaced it already
            fresh = self._factory()
            await fresh.start()
            self._producer = fresh
            self.replacements += 1
            logger.warning(
                "idempotent producer out of step with the broker (%s): replaced by a new "
                "producer id (%d replacement(s) so far)", why, self.replacements,
            )
        task = asyncio.create_task(_close(failed), name="replaced-producer-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _sender_dead(producer: AIOKafkaProducer) -> bool:
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return task is not None and task.done()


async def _close(producer: AIOKafkaProducer) -> None:
    # What the replaced producer still holds fails with the same error (its callers send
    # again on the fresh one); a close that hangs must not hold up anything.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), _CLOSE_TIMEOUT_S)
