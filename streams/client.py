"""The producer-side SDK: submit requests, await their answers.

Example::

    async with RouterClient(settings) as client:
        response = await client.ask("What are your store hours?", user_id="u-1")
        print(response.content, response.route.tier)

One shared consumer reads the responses and dead-letter topics and hands each result to the
caller waiting for that request id. Redelivered responses (at-least-once upstream) are
dropped: the first answer for a request id wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from deploy.admin import kafka_client_kwargs
from deploy.producer import RecoveringProducer
from schemas.codec import decode, encode
from schemas.errors import RouterError, SchemaError
from schemas.messages import ChatMessage, DeadLetter, RouteRequest, RouteResponse
from schemas.settings import Settings

__all__ = ["RequestDeadLettered", "RequestTimedOut", "RouterClient", "topic_partitions"]

logger = logging.getLogger(__name__)


async def topic_partitions(
    consumer: AIOKafkaConsumer, topics: Sequence[str]
) -> list[TopicPartition]:
    """Every partition of ``topics``, read from fresh cluster metadata.

    Raises :class:`RouterError` naming the topics that do not exist.
    """
    # The consumer's own metadata cache only tracks subscribed topics, and `topics()` throws
    # the fresh metadata away after listing names: ask the client for it directly.
    cluster = await consumer._client.fetch_all_metadata()
    missing = [topic for topic in topics if topic not in cluster.topics()]
    if missing:
        raise RouterError(f"topics {missing} do not exist; run `llm-router topics create`")
    return [
        TopicPartition(topic, number)
        for topic in topics
        for number in sorted(cluster.partitions_for_topic(topic) or ())
    ]


class RequestTimedOut(RouterError):
    """No answer arrived within the caller's timeout (the request may still be answered)."""

    retriable = True


class RequestDeadLettered(RouterError):
    """The router gave up on the request; ``dead_letter`` says where and why."""

    def __init__(self, dead_letter: DeadLetter):
        tiers = ", ".join(dead_letter.tiers_tried) or "none"
        super().__init__(
            f"request {dead_letter.request_id} dead-lettered at {dead_letter.stage}: "
            f"{dead_letter.error_kind}: {dead_letter.error} (tiers tried: {tiers})"
        )
        self.dead_letter = dead_letter


Result = RouteResponse | DeadLetter


class RouterClient:
    """Async client for producers: ``submit``, ``result`` and ``ask``.

    ``max_buffered`` bounds the results kept for request ids nobody is waiting for (yet), and
    the set of ids already answered that later duplicates are checked against.
    """

    def __init__(self, settings: Settings, *, max_buffered: int = 100_000) -> None:
        self._settings = settings
        self._max_buffered = max_buffered
        self._producer: RecoveringProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[Result]] = {}
        self._unclaimed: OrderedDict[str, Result] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    async def __aenter__(self) -> RouterClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, and start reading results from the current end of the topics."""
        if self._producer is not None:
            return
        kwargs = kafka_client_kwargs(self._settings.kafka)
        topics = self._settings.topics
        self._producer = RecoveringProducer(
            lambda: AIOKafkaProducer(**kwargs, acks="all", enable_idempotence=True, linger_ms=2)
        )
        self._consumer = AIOKafkaConsumer(
            **kwargs, enable_auto_commit=False, group_id=None, auto_offset_reset="latest"
        )
        try:
            await self._producer.start()
            await self._consumer.start()
            partitions = await topic_partitions(
                self._consumer, [topics.responses, topics.deadletter]
            )
            self._consumer.assign(partitions)
            await self._consumer.seek_to_end(*partitions)
            # Resolve the end offsets now so that nothing produced after start() is skipped.
            for partition in partitions:
                await self._consumer.position(partition)
        except BaseException:
            await self.stop()
            raise
        self._reader = asyncio.create_task(self._read(), name="router-client-reader")

    async def stop(self) -> None:
        """Disconnect; waiting ``result()`` calls are cancelled. Safe to call twice."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        # Callers still awaiting result() see CancelledError; futures nobody awaits (submitted
        # but never asked for) are cancelled quietly instead of logging unretrieved errors.
        for future in self._waiters.values():
            future.cancel()
        self._waiters.clear()
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def submit(self, request: RouteRequest, *, headers: dict[str, str] | None = None) -> str:
        """Publish a request to the requests topic; returns its id once the broker has it."""
        if self._producer is None:
            raise RouterError("RouterClient is not started")
        self._waiters.setdefault(request.id, asyncio.get_running_loop().create_future())
        await self._producer.send_and_wait(
            self._settings.topics.requests,
            encode(request),
            key=request.conversation_id.encode(),
            headers=[(k, v.encode()) for k, v in (headers or {}).items()],
        )
        return request.id

    async def result(self, request_id: str, timeout_s: float | None = None) -> RouteResponse:
        """Wait for the answer to ``request_id``.

        Raises :class:`RequestDeadLettered` when the router gave up on it and
        :class:`RequestTimedOut` when nothing came within ``timeout_s`` seconds.
        """
        future = self._waiters.get(request_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            if request_id in self._unclaimed:
                future.set_result(self._unclaimed.pop(request_id))
            self._waiters[request_id] = future
        try:
            outcome = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            raise RequestTimedOut(f"no answer to {request_id} within {timeout_s} s") from None
        self._waiters.pop(request_id, None)
        if isinstance(outcome, DeadLetter):
            raise RequestDeadLettered(outcome)
        return outcome

    async def ask(
        self,
        prompt: str | Sequence[ChatMessage],
        *,
        user_id: str = "anonymous",
        conversation_id: str | None = None,
        timeout_s: float | None = 60.0,
        **fields: Any,
    ) -> RouteResponse:
        """Submit one request and wait for its answer."""
        messages = (
            [ChatMessage(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)
        )
        request = RouteRequest(
            user_id=user_id,
            conversation_id=conversation_id or uuid.uuid4().hex,
            messages=messages,
            **fields,
        )
        return await self.result(await self.submit(request), timeout_s)

    def _remember(self, request_id: str) -> bool:
        # True the first time a final result for this id is seen.
        if request_id in self._done:
            return False
        self._done[request_id] = None
        while len(self._done) > self._max_buffered:
            self._done.popitem(last=False)
        return True

    def _deliver(self, request_id: str, outcome: Result) -> None:
        if not self._remember(request_id):
            self.duplicates += 1
            return
        future = self._waiters.get(request_id)
        if future is not None:
            if not future.done():
                future.set_result(outcome)
            return
        self._unclaimed[request_id] = outcome
        while len(self._unclaimed) > self._max_buffered:
            self._unclaimed.popitem(last=False)

    async def _read(self) -> None:
        assert self._consumer is not None
        topics = self._settings.topics
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for partition, records in batches.items():
                for record in records:
                    try:
                        outcome: Result
                        if partition.topic == topics.responses:
                            outcome = decode(RouteResponse, record.value)
                            self._deliver(outcome.request_id, outcome)
                        else:
                            outcome = decode(DeadLetter, record.value)
                            if outcome.request_id is not None:
                                self._deliver(outcome.request_id, outcome)
                    except SchemaError as exc:
                        logger.warning(
                            "unreadable result on %s[%d]@%d: %s",
                            partition.topic, partition.partition, record.offset, exc,
                        )
