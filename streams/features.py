"""Cheap features computed beside the classifier, recorded on every ``ScoredRequest``.

They read the last user message only (what the request asks) and stay linear in its length;
a few microseconds per request, small next to the classifier.

>>> from schemas.messages import ChatMessage, RouteRequest
>>> text = "Refund 2 items from 2024-05-01"
>>> req = RouteRequest(user_id="u", conversation_id="c",
...                    messages=[ChatMessage(role="user", content=text)])
>>> f = compute_features(req, turn=1)
>>> (f.numbers, f.dates, f.code)
(1, 1, False)
"""

from __future__ import annotations

import re

from schemas.messages import Features, RouteRequest
from streams.state import UserStats

__all__ = ["compute_features"]

# Dates first, so their digits are not counted again as numbers.
_DATE = re.compile(
    r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b|"
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? \d{1,2}\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?![\w])")
# Capitalised words not at a sentence start, acronyms, ids: a rough count of named things.
_ENTITY = re.compile(r"(?<=[a-z,;:] )[A-Z][\w-]+|\b[A-Z]{2,}\b|\b[A-Za-z]+[-_]\d+\b")
_CODE = re.compile(
    r"```|^\s*(?:def|class|import|from|function|const|let|var|public|private|#include|SELECT)\b"
    r"|[{};]\s*$|=>|\breturn\b.*;|\w+\([^)]*\)\s*[{:]",
    re.MULTILINE,
)
# Features read at most this much of a message: enough to count, bounded in cost.
_MAX_CHARS = 20_000


def compute_features(
    request: RouteRequest, *, turn: int, user: UserStats | None = None
) -> Features:
    """The request's features; ``turn`` is the conversation turn the router counted."""
    text = request.prompt_text()
    sample = text[:_MAX_CHARS]
    words = len(sample.split())
    dates = len(_DATE.findall(sample))
    numbers = len(_NUMBER.findall(_DATE.sub(" ", sample)))
    entities = len(_ENTITY.findall(sample))
    stats = user or UserStats()
    return Features(
        turn=turn,
        chars=sum(len(m.content) for m in request.messages),
        numbers=numbers,
        dates=dates,
        entity_density=round(entities / words, 4) if words else 0.0,
        code=_CODE.search(sample) is not None,
        tools=len(request.tools),
        user_outcomes=stats.outcomes,
        user_uproute_rate=round(stats.uproute_rate, 4),
    )
