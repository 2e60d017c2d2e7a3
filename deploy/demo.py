"""Sample traffic with a live view, and reading the result topics back (`stats`, `tail`)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from deploy.admin import kafka_client_kwargs
from deploy.summary import RouteSummary
from deploy.traffic import sample_requests
from schemas.codec import decode
from schemas.errors import SchemaError
from schemas.messages import DeadLetter, RouteResponse
from schemas.settings import Settings
from streams.client import (
    RequestDeadLettered,
    RequestTimedOut,
    RouterClient,
    topic_partitions,
)

__all__ = ["collect_summary", "drive", "run_demo", "tail_topic"]


def _live_table(summary: RouteSummary, sent: int, timed_out: int, started: float) -> Table:
    table = Table(title=f"live routes · {time.monotonic() - started:.0f} s")
    for column in ("sent", *summary.settings.chain, "dead letters", "waiting"):
        table.add_column(column, justify="right")
    counts = summary.tier_counts()
    done = summary.total + timed_out
    table.add_row(
        str(sent),
        *(str(counts[t]) for t in summary.settings.chain),
        str(len(summary.dead_letters)),
        str(sent - done),
    )
    return table


async def drive(
    settings: Settings, *, per_category: int, timeout_s: float, console: Console
) -> RouteSummary:
    """Send the sample traffic and collect every outcome, showing progress live."""
    requests = sample_requests(per_category)
    summary = RouteSummary(settings)
    timed_out: Counter[str] = Counter()
    started = time.monotonic()
    async with RouterClient(settings) as client:

        async def one(request_id: str) -> None:
            try:
                summary.add(await client.result(request_id, timeout_s))
            except RequestDeadLettered as exc:
                summary.add(exc.dead_letter)
            except RequestTimedOut:
                timed_out["timed out"] += 1

        waiting = []
        for request in requests:
            waiting.append(asyncio.create_task(one(await client.submit(request))))
        with Live(
            _live_table(summary, len(requests), 0, started), console=console, refresh_per_second=4
        ) as live:
            while not all(task.done() for task in waiting):
                await asyncio.sleep(0.5)
                live.update(_live_table(summary, len(requests), sum(timed_out.values()), started))
        await asyncio.gather(*waiting)
    if timed_out:
        console.print(f"[yellow]{sum(timed_out.values())} request(s) got no answer in time[/]")
    return summary


def run_demo(settings: Settings, *, per_category: int, timeout_s: float, console: Console) -> None:
    summary = run_interruptibly(
        drive(settings, per_category=per_category, timeout_s=timeout_s, console=console)
    )
    console.print(summary.render())


T = TypeVar("T")


def run_interruptibly(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, except that a Ctrl-C always ends in :class:`KeyboardInterrupt`.

    ``asyncio.run`` turns the first Ctrl-C into a cancellation of the main task and raises
    KeyboardInterrupt only if that cancellation comes back out of it: code that swallows the
    cancellation makes the Ctrl-C do nothing (a test shows it). It also installs no handler
    at all when SIGINT is not Python's default one. Here a Ctrl-C cancels the task, is
    remembered, and is raised as KeyboardInterrupt when the task ends however it ends; a
    second Ctrl-C raises at once.
    """

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        interrupted = False

        def on_sigint() -> None:
            nonlocal interrupted
            if interrupted:
                raise KeyboardInterrupt
            interrupted = True
            task.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            result = await coro
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        if interrupted:
            raise KeyboardInterrupt
        return result

    return asyncio.run(main())


async def _read_all(
    settings: Settings, topics: list[str], *, from_beginning: bool
) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings.kafka), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topics)
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def collect_summary(settings: Settings) -> RouteSummary:
    """Everything the responses and dead-letter topics hold now, summarised."""
    topics = settings.topics
    summary = RouteSummary(settings)
    consumer = await _read_all(
        settings, [topics.responses, topics.deadletter], from_beginning=True
    )
    try:
        assigned = list(consumer.assignment())
        ends = await consumer.end_offsets(assigned)

        async def behind() -> bool:
            return any([await consumer.position(p) < ends[p] for p in assigned])

        while await behind():
            for partition, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    try:
                        if partition.topic == topics.responses:
                            summary.add(decode(RouteResponse, record.value))
                        else:
                            summary.add(decode(DeadLetter, record.value))
                    except SchemaError:
                        continue
    finally:
        await consumer.stop()
    return summary


async def tail_topic(settings: Settings, topic: str, *, from_beginning: bool, limit: int) -> None:
    """Print each message of ``topic`` as one JSON line."""
    consumer = await _read_all(settings, [topic], from_beginning=from_beginning)
    seen = 0
    try:
        while limit == 0 or seen < limit:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    value = record.value or b""
                    typer.echo(value.decode(errors="replace"))
                    seen += 1
                    if limit and seen >= limit:
                        return
    finally:
        await consumer.stop()
