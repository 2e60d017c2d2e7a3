"""The bundled sample traffic `llm-router up` sends: real prompts of every category.

The prompts come from the classifier's held-out sample (``classifier_onnx/model/
sample_prompts.jsonl``: real public text the classifier never trained on). On top of them the
demo adds what a real producer sends too: a multi-turn conversation, a forced tier and an
answer that must be JSON.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from schemas.messages import ChatMessage, FormatSpec, RouteRequest

__all__ = ["SAMPLE_FILE", "sample_requests"]

SAMPLE_FILE = Path(__file__).resolve().parent.parent / "classifier_onnx" / "model" / (
    "sample_prompts.jsonl"
)


def _messages(row: dict[str, Any]) -> list[ChatMessage]:
    if "messages" in row:
        return [ChatMessage(role=m["role"], content=m["content"]) for m in row["messages"]]
    text = row.get("text") or row.get("prompt") or ""
    return [ChatMessage(role="user", content=str(text))]


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sample_requests(
    per_category: int = 4, *, seed: int = 7, path: Path = SAMPLE_FILE, run_id: str | None = None
) -> list[RouteRequest]:
    """A deterministic mix: ``per_category`` prompts of each category plus the extras."""
    run = run_id or uuid.uuid4().hex[:8]
    rng = random.Random(seed)
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _load(path):
        by_category[str(row.get("category", "general"))].append(row)
    requests: list[RouteRequest] = []
    for category in sorted(by_category):
        rows = by_category[category]
        for index, row in enumerate(rng.sample(rows, min(per_category, len(rows)))):
            messages = _messages(row)
            if not any(m.role == "user" for m in messages):
                continue
            tools = row.get("tools") or []
            requests.append(RouteRequest(
                id=f"{run}-{category}-{index}",
                user_id=f"demo-user-{index % 3}",
                conversation_id=f"{run}-conv-{category}-{index}",
                messages=messages,
                tools=tools if isinstance(tools, list) else [],
                metadata={"sample_category": category},
            ))
    conversation = f"{run}-conv-long"
    history: list[ChatMessage] = []
    questions = [
        "Hi! I'm planning a trip to Lisbon.",
        "What neighbourhoods are good to stay in?",
        "Which one is quietest at night?",
        "How do I get there from the airport?",
        "Compare the total cost of taxi vs metro for two people with luggage.",
    ]
    for turn, question in enumerate(questions, start=1):
        history = [*history, ChatMessage(role="user", content=question)]
        requests.append(RouteRequest(
            id=f"{run}-long-{turn}", user_id="demo-user-long", conversation_id=conversation,
            turn=turn, messages=history,
        ))
        history = [*history, ChatMessage(role="assistant", content="(answered)")]
    requests.append(RouteRequest(
        id=f"{run}-forced", user_id="demo-user-0", conversation_id=f"{run}-conv-forced",
        messages=[ChatMessage(role="user", content="Say hello.")], forced_tier="balanced",
    ))
    requests.append(RouteRequest(
        id=f"{run}-json", user_id="demo-user-1", conversation_id=f"{run}-conv-json",
        messages=[ChatMessage(
            role="user",
            content='Return a JSON object {"city": ..., "country": ...} for the capital of Japan.',
        )],
        format=FormatSpec(kind="json"),
    ))
    return requests
