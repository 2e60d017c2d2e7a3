"""Turn routing outcomes into labelled examples that ``train`` accepts beside the base data.

Records come from the response and up-route topics (or a JSONL file of them)::

    {"request": {"messages": [...], "tools": [...]}, "kind": "response" | "uproute",
     "tier": "fast" | "balanced" | "frontier", "reason": "timeout" | "invalid_output" | ...,
     "category": "general", "complexity": 0.21}

Rules (tiers: fast < 0.3 <= balanced < 0.7 <= frontier):

* a ``response`` answered on the ``fast`` tier with no failure ``reason`` confirms the
  request was easy: complexity label ``min(score, 0.25)`` (0.15 when no score is known);
* an ``uproute``, or a ``response`` with a failure ``reason`` such as ``invalid_output``,
  on a tier means the request needed more: the label is raised to at least the middle of
  the next tier's range (fast -> 0.45, balanced -> 0.8, frontier -> 0.9);
* a successful response on a larger tier says nothing about whether a smaller one would
  have done, so it yields no example.

When one request has several records (answered after an up-route), the strongest signal
wins: the highest label. The category comes from the record (the scorer's category) when it
is one of ``CATEGORIES``; otherwise it is ``None`` and ``train`` learns only the complexity
from that row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from classifier_onnx.features import CATEGORIES

TIER_ORDER = ("fast", "balanced", "frontier")
# The label an up-route from each tier implies: inside the next tier's range.
NEEDED_MORE = {"fast": 0.45, "balanced": 0.8, "frontier": 0.9}
FAST_CONFIRMED = 0.15
FAST_CEILING = 0.25


def _request_key(record: Mapping[str, Any], request: Mapping[str, Any]) -> str:
    for key in ("request_id", "id"):
        value = record.get(key) or request.get(key)
        if value:
            return str(value)
    return json.dumps(request.get("messages", []), sort_keys=True, default=str)


def record_label(record: Mapping[str, Any]) -> float | None:
    """The complexity label one outcome record implies, or None when it implies nothing."""
    tier = str(record.get("tier", ""))
    kind = str(record.get("kind", ""))
    failed = kind == "uproute" or bool(record.get("reason"))
    prior = record.get("complexity")
    score = float(prior) if isinstance(prior, int | float) else None
    if failed and tier in NEEDED_MORE:
        return max(NEEDED_MORE[tier], score or 0.0)
    if kind == "response" and tier == "fast":
        return min(score, FAST_CEILING) if score is not None else FAST_CONFIRMED
    return None


def records_to_examples(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Map outcome records to training rows (``messages, tools, turn, category, complexity``).

    >>> records_to_examples([{"request": {"messages": [{"role": "user", "content": "hi"}]},
    ...     "kind": "uproute", "tier": "fast", "reason": "timeout"}])[0]["complexity"]
    0.45
    """
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        request = record.get("request")
        if not isinstance(request, Mapping):
            continue
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            continue
        label = record_label(record)
        if label is None:
            continue
        tools = request.get("tools")
        category = record.get("category")
        row = {
            "messages": [dict(m) for m in messages if isinstance(m, Mapping)],
            "tools": len(tools) if isinstance(tools, list) else int(tools or 0),
            "turn": int(request.get("turn", 1) or 1),
            "category": category if category in CATEGORIES else None,
            "complexity": round(label, 4),
            "source": f"learn/{record.get('kind', '')}/{record.get('tier', '')}",
        }
        key = _request_key(record, request)
        if key not in best or row["complexity"] > best[key]["complexity"]:
            if key in best and row["category"] is None:
                row["category"] = best[key]["category"]
            best[key] = row
    return list(best.values())


def learn(records_path: Path, out_path: Path) -> dict[str, int]:
    """Read outcome records (JSONL) and write training rows (JSONL); return counts."""
    with records_path.open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    rows = records_to_examples(records)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    return {"records": len(records), "examples": len(rows)}
