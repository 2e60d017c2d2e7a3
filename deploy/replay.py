"""Replay dead letters: ``llm-router deadletter replay``.

Reads ``llm.deadletter`` from the oldest message (or from ``--since``) up to its end at the
time the command starts, picks the dead letters that match the filters, and republishes what
each one held:

==========================  ==============================================================
stage of the dead letter    what is republished
==========================  ==============================================================
``ingest``, ``score``       the original bytes, unchanged, to ``llm.requests`` with the
                            original key: the router reads them again
``uproute``, ``worker``     the :class:`RouteRequest` inside the original
(and ``client``)            :class:`UpRouteEvent` / :class:`ScoredRequest`, to
                            ``llm.requests`` (scored again, fresh attempt history), or with
                            ``--to-tier NAME`` as a :class:`ScoredRequest` with no attempts
                            straight to ``llm.tier.NAME``
==========================  ==============================================================

Every republished message keeps the dead letter's headers (``traceparent``…) and gets a
``llm-router-replay: <topic>:<partition>:<offset>`` header naming the dead letter. By default
an extracted request gets a fresh request id (the original is kept in
``metadata["replay_of"]``): tier workers skip a request id they answered recently, so a replay
under the old id could be dropped as a duplicate. Its deadline, usually the reason it died, is
dropped unless ``--keep-deadline``. The dead-letter topic is read without a consumer group and
nothing on it is changed: replaying twice republishes twice.

Example::

    actions = await replay_dead_letters(
        settings, ReplayFilter(stages=frozenset({"worker"}), limit=10), dry_run=True
    )
    for action in actions:
        print(action.describe())
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, get_args

import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from deploy.admin import kafka_client_kwargs
from schemas.codec import decode, encode
from schemas.errors import RouterError, SchemaError
from schemas.messages import (
    DeadLetter,
    DeadLetterStage,
    RouteRequest,
    ScoredRequest,
    UpRouteEvent,
    new_id,
    utcnow,
)
from schemas.settings import Settings

__all__ = [
    "REPLAY_HEADER",
    "REPLAY_OF_METADATA",
    "ReplayAction",
    "ReplayError",
    "ReplayFilter",
    "deadletter_replay",
    "parse_since",
    "plan_replay",
    "replay_dead_letters",
    "topic_partitions",
]

logger = logging.getLogger(__name__)

REPLAY_HEADER = "llm-router-replay"
REPLAY_OF_METADATA = "replay_of"
STAGES: tuple[str, ...] = get_args(DeadLetterStage)
# Stages whose original bytes are a request as a producer wrote it.
_RAW_STAGES = frozenset({"ingest", "score"})
_MAX_METADATA = 64
_POLL_MS = 500

Headers = list[tuple[str, bytes]]


class ReplayError(RouterError):
    """The replay could not run: bad options, or the dead-letter topic could not be read."""


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay; empty sets match everything."""

    since: datetime | None = None
    limit: int = 0
    stages: frozenset[str] = frozenset()
    error_kinds: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()

    def matches(self, letter: DeadLetter, written_at: datetime | None) -> bool:
        if self.since is not None:
            when = written_at or letter.created_at
            if when < self.since:
                return False
        if self.stages and letter.stage not in self.stages:
            return False
        if self.error_kinds and letter.error_kind not in self.error_kinds:
            return False
        return not self.request_ids or letter.request_id in self.request_ids


@dataclass(frozen=True)
class ReplayAction:
    """What replaying one dead letter does (or, with ``topic`` None, why it is skipped)."""

    source: str
    stage: str
    error_kind: str
    request_id: str | None
    topic: str | None
    what: str
    key: bytes | None = None
    value: bytes = b""
    headers: Headers = field(default_factory=list)
    new_request_id: str | None = None

    @property
    def skipped(self) -> bool:
        return self.topic is None

    def describe(self) -> str:
        """One line for people: where the dead letter is, and what becomes of it."""
        request = self.request_id or "-"
        if self.new_request_id and self.new_request_id != self.request_id:
            request = f"{request} (replayed as {self.new_request_id})"
        head = f"{self.source} {self.stage}/{self.error_kind} request {request}"
        if self.topic is None:
            return f"{head}: skipped, {self.what}"
        return f"{head} → {self.topic}: {self.what}"


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``2025-01-31T12:00:00Z`` (naive means UTC) or an age: ``90s``, ``30m``, ``2h``, ``7d``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return (now or utcnow()) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"--since {value!r}: expected an ISO-8601 time or an age such as 30m, 2h, 7d"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _extract(letter: DeadLetter) -> ScoredRequest | RouteRequest:
    """The most complete message inside a dead letter's original bytes."""
    errors: list[str] = []
    try:
        return decode(UpRouteEvent, letter.original).scored
    except SchemaError as exc:
        errors.append(str(exc))
    try:
        return decode(ScoredRequest, letter.original)
    except SchemaError as exc:
        errors.append(str(exc))
    try:
        return decode(RouteRequest, letter.original)
    except SchemaError as exc:
        errors.append(str(exc))
    raise SchemaError("invalid", "original holds no request: " + " | ".join(errors))


def _fresh(
    request: RouteRequest, *, new_request_id: bool, keep_deadline: bool
) -> RouteRequest:
    update: dict[str, object] = {}
    if new_request_id:
        update["id"] = new_id()
        if len(request.metadata) < _MAX_METADATA or REPLAY_OF_METADATA in request.metadata:
            update["metadata"] = {**request.metadata, REPLAY_OF_METADATA: request.id}
    if not keep_deadline:
        update["deadline"] = None
    return request.model_copy(update=update) if update else request


def plan_replay(
    letter: DeadLetter,
    settings: Settings,
    *,
    source: str = "-",
    headers: Sequence[tuple[str, bytes]] = (),
    to_tier: str | None = None,
    new_request_id: bool = True,
    keep_deadline: bool = False,
) -> ReplayAction:
    """What replaying ``letter`` (found at ``source``, ``topic:partition:offset``) publishes."""
    topics = settings.topics
    replay_headers: Headers = [(k, v) for k, v in headers if k != REPLAY_HEADER]
    replay_headers.append((REPLAY_HEADER, source.encode()))

    def action(
        topic: str | None,
        what: str,
        *,
        key: bytes | None = None,
        value: bytes = b"",
        new_request_id: str | None = None,
    ) -> ReplayAction:
        return ReplayAction(
            source=source, stage=letter.stage, error_kind=letter.error_kind,
            request_id=letter.request_id, topic=topic, what=what, key=key, value=value,
            headers=replay_headers if topic is not None else [], new_request_id=new_request_id,
        )

    if to_tier is not None and to_tier not in settings.chain:
        raise ReplayError(f"--to-tier {to_tier!r} is not in the chain {list(settings.chain)}")

    if letter.stage in _RAW_STAGES:
        if to_tier is not None:
            return action(
                None,
                f"--to-tier needs a scored request; {letter.stage}-stage dead letters "
                "go back to the requests topic (run without --to-tier)",
            )
        if not letter.original:
            return action(None, "the original payload is empty")
        key = letter.source_key.encode() if letter.source_key is not None else None
        return action(
            topics.requests, key=key, value=letter.original,
            what=f"original bytes ({len(letter.original)} B) unchanged",
        )

    try:
        inner = _extract(letter)
    except SchemaError as exc:
        return action(None, str(exc)[:500])
    request = inner.request if isinstance(inner, ScoredRequest) else inner
    fresh = _fresh(request, new_request_id=new_request_id, keep_deadline=keep_deadline)
    key = fresh.conversation_id.encode()
    note = "" if keep_deadline or request.deadline is None else ", deadline dropped"
    if to_tier is None:
        return action(
            topics.requests, key=key, value=encode(fresh),
            new_request_id=fresh.id,
            what=f"RouteRequest to be scored again, fresh attempt history{note}",
        )
    if isinstance(inner, ScoredRequest):
        scored = inner.model_copy(
            update={
                "request": fresh,
                "tier": to_tier,
                "model": None,
                "reason": "forced",
                "detail": f"replayed from dead letter {source} ({letter.error_kind})"[:2000],
                "attempts": [],
                "scored_at": utcnow(),
            }
        )
    else:
        scored = ScoredRequest(
            request=fresh, score=1.0, category="replay", confidence=0.0, tier=to_tier,
            reason="forced", detail=f"replayed from dead letter {source} ({letter.error_kind})",
        )
    return action(
        topics.tier(to_tier), key=key, value=encode(scored),
        new_request_id=fresh.id,
        what=f"ScoredRequest forced to tier {to_tier}, no attempts{note}",
    )


async def topic_partitions(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of ``topic``; empty when it does not exist."""
    # A consumer only holds metadata of the topics it was given; ask the cluster instead.
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings.kafka))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry.get("topic") == topic and entry.get("error_code", 0) == 0:
            return sorted(int(p["partition"]) for p in entry.get("partitions", []))
    return []


def _written_at(record: ConsumerRecord[bytes, bytes]) -> datetime | None:
    if record.timestamp is None or record.timestamp < 0:
        return None
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


async def replay_dead_letters(
    settings: Settings,
    selection: ReplayFilter = ReplayFilter(),
    *,
    to_tier: str | None = None,
    new_request_id: bool = True,
    keep_deadline: bool = False,
    dry_run: bool = False,
    timeout_s: float = 60.0,
    on_action: Callable[[ReplayAction], None] | None = None,
) -> list[ReplayAction]:
    """Replay the dead letters ``selection`` matches; returns what was done, in read order.

    With ``dry_run`` nothing is published. Raises :class:`ReplayError` when the dead-letter
    topic does not exist or cannot be read to its end within ``timeout_s``.
    """
    if to_tier is not None and to_tier not in settings.chain:
        raise ReplayError(f"--to-tier {to_tier!r} is not in the chain {list(settings.chain)}")
    topic = settings.topics.deadletter
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings.kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer: AIOKafkaProducer | None = None
    actions: list[ReplayAction] = []
    partitions = await topic_partitions(settings, topic)
    if not partitions:
        raise ReplayError(f"topic {topic} does not exist")
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        # What was on the topic when the replay started: replays of replays are not re-read.
        end = await consumer.end_offsets(assigned)
        if selection.since is not None:
            since_ms = int(selection.since.timestamp() * 1000)
            starts = await consumer.offsets_for_times(dict.fromkeys(assigned, since_ms))
            for tp in assigned:
                found = starts.get(tp)
                consumer.seek(tp, found.offset if found is not None else end[tp])
        else:
            await consumer.seek_to_beginning(*assigned)
        if not dry_run:
            producer = AIOKafkaProducer(**kafka_client_kwargs(settings.kafka), acks="all")
            await producer.start()

        pending = {tp for tp in assigned if await consumer.position(tp) < end[tp]}
        deadline = time.monotonic() + timeout_s
        matched = 0
        while pending and not (selection.limit and matched >= selection.limit):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplayError(
                    f"{topic} not read to its end within {timeout_s:.0f}s "
                    f"({matched} dead letter(s) matched so far)"
                )
            batches = await consumer.getmany(
                *pending, timeout_ms=int(min(left * 1000, _POLL_MS))
            )
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= end[tp]:
                        break
                    if selection.limit and matched >= selection.limit:
                        break
                    action = _plan_record(
                        record, settings, selection,
                        to_tier=to_tier, new_request_id=new_request_id,
                        keep_deadline=keep_deadline,
                    )
                    if action is None:
                        continue
                    matched += 1
                    if producer is not None and action.topic is not None:
                        await producer.send_and_wait(
                            action.topic, action.value, key=action.key, headers=action.headers
                        )
                        logger.info("replayed %s", action.describe())
                    actions.append(action)
                    if on_action is not None:
                        on_action(action)
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
    finally:
        if producer is not None:
            await producer.stop()
        await consumer.stop()
    return actions


def _plan_record(
    record: ConsumerRecord[bytes, bytes],
    settings: Settings,
    selection: ReplayFilter,
    *,
    to_tier: str | None,
    new_request_id: bool,
    keep_deadline: bool,
) -> ReplayAction | None:
    source = f"{record.topic}:{record.partition}:{record.offset}"
    try:
        letter = decode(DeadLetter, record.value)
    except SchemaError as exc:
        logger.warning("%s is not a dead letter, left alone: %s", source, exc)
        if selection.stages or selection.error_kinds or selection.request_ids:
            return None
        return ReplayAction(
            source=source, stage="?", error_kind=exc.kind, request_id=None, topic=None,
            what=f"not a dead letter: {str(exc)[:300]}",
        )
    if not selection.matches(letter, _written_at(record)):
        return None
    headers = [
        (name, bytes(value) if value is not None else b"")
        for name, value in (record.headers or ())
    ]
    return plan_replay(
        letter, settings, source=source, headers=headers, to_tier=to_tier,
        new_request_id=new_request_id, keep_deadline=keep_deadline,
    )


def deadletter_replay(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="Only dead letters written since: ISO-8601 time or age (30m, 2h, 7d)."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=0, help="Replay at most this many matching dead letters (0: all).")
    ] = 0,
    stage: Annotated[
        list[str] | None,
        typer.Option(help=f"Only this stage ({', '.join(STAGES)}); repeatable."),
    ] = None,
    error_kind: Annotated[
        list[str] | None,
        typer.Option(help="Only this error kind (timeout, deadline_exceeded, …); repeatable."),
    ] = None,
    request_id: Annotated[
        list[str] | None, typer.Option(help="Only this request id; repeatable.")
    ] = None,
    to_tier: Annotated[
        str | None,
        typer.Option(help="Send up-route/worker dead letters straight to this tier's topic."),
    ] = None,
    new_id: Annotated[
        bool,
        typer.Option(
            "--new-id/--keep-id",
            help="Give extracted requests a fresh id (workers skip ids they answered recently).",
        ),
    ] = True,
    keep_deadline: Annotated[
        bool, typer.Option(help="Keep the request's deadline (it has usually passed).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be replayed; publish nothing.")
    ] = False,
    timeout_s: Annotated[
        float, typer.Option(min=1, help="Give up reading the dead-letter topic after this.")
    ] = 60.0,
) -> None:
    """Republish dead letters: ingest-stage ones as their original bytes, the rest as requests.

    Every republished message carries a ``llm-router-replay`` header naming the dead letter.
    """
    from deploy.cli import configure_logging, settings_of

    settings = settings_of(ctx)
    configure_logging("WARNING")
    unknown = sorted(set(stage or ()) - set(STAGES))
    if unknown:
        raise typer.BadParameter(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    if to_tier is not None and to_tier not in settings.chain:
        raise typer.BadParameter(
            f"{to_tier!r} is not in the chain {list(settings.chain)}", param_hint="--to-tier"
        )
    try:
        selection = ReplayFilter(
            since=parse_since(since) if since else None,
            limit=limit,
            stages=frozenset(stage or ()),
            error_kinds=frozenset(error_kind or ()),
            request_ids=frozenset(request_id or ()),
        )
    except ReplayError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None

    verb = "would replay" if dry_run else "replayed"

    def show(action: ReplayAction) -> None:
        label = "skip" if action.skipped else ("dry-run" if dry_run else "replay")
        typer.echo(f"{label:<8}{action.describe()}")

    try:
        actions = asyncio.run(
            replay_dead_letters(
                settings, selection, to_tier=to_tier, new_request_id=new_id,
                keep_deadline=keep_deadline, dry_run=dry_run, timeout_s=timeout_s,
                on_action=show,
            )
        )
    except ReplayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    done = sum(not a.skipped for a in actions)
    skipped = len(actions) - done
    suffix = " (dry run: nothing was published)" if dry_run else ""
    typer.echo(f"{verb} {done}, skipped {skipped} of {len(actions)} matching{suffix}")
