"""What the stages read and write, independent of Faust: records in, records out.

A :class:`Record` is one consumed Kafka message as the stages see it; a :class:`Sink`
publishes bytes to a topic. The Faust wiring in :mod:`streams.app` adapts events and topics
to these, so the stages can be tested with a list and a fake sink.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.codec import encode
from schemas.messages import Attempt, DeadLetter, DeadLetterStage

__all__ = ["Headers", "Record", "Sink", "dead_letter", "normalize_headers"]

Headers = list[tuple[str, bytes]]


def normalize_headers(raw: Any) -> Headers:
    """Kafka headers as a list of ``(name, bytes)``, whatever shape the client gave."""
    if not raw:
        return []
    items: Iterable[Any] = raw.items() if isinstance(raw, Mapping) else raw
    out: Headers = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if value is None:
            value = b""
        elif isinstance(value, str):
            value = value.encode()
        if isinstance(name, str) and isinstance(value, bytes):
            out.append((name, value))
    return out


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message: payload bytes, key, headers and where it came from."""

    value: bytes | None
    topic: str
    partition: int = 0
    offset: int = 0
    key: bytes | None = None
    headers: Headers = field(default_factory=list)
    # Kafka timestamp of the message, epoch seconds (None when unknown).
    timestamp: float | None = None
    # When the router read it from Kafka, epoch seconds (None when unknown): before it waited
    # for a batch.
    received: float | None = None

    @property
    def key_text(self) -> str | None:
        return self.key.decode("utf-8", "replace") if self.key is not None else None


class Sink(Protocol):
    """Publishes to a topic; the returned awaitable completes when the broker has it."""

    async def send(
        self, topic: str, *, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[Any]: ...


def dead_letter(
    record: Record,
    *,
    stage: DeadLetterStage,
    error_kind: str,
    error: str,
    request_id: str | None = None,
    conversation_id: str | None = None,
    attempts: Sequence[Attempt] = (),
) -> bytes:
    """The encoded :class:`DeadLetter` of ``record`` with its original bytes and source."""
    return encode(
        DeadLetter(
            stage=stage,
            error_kind=error_kind,
            error=error[:20_000],
            original=record.value or b"",
            request_id=request_id,
            conversation_id=conversation_id,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            source_key=record.key_text,
            attempts=list(attempts),
            tiers_tried=[a.tier for a in attempts],
        )
    )
