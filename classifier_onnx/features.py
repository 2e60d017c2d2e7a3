"""Turn a chat request into the classifier's input text.

The same function renders training examples and live requests, so the model sees one format.
Cheap structured signals ride in a short prefix beside the text: how many tools the request
offers and which conversation turn it is. Text alone cannot tell a tool-use request from a
plain question when the tool list is what makes it one.

>>> render_request([{"role": "user", "content": "What are your store hours?"}])
'What are your store hours?'
>>> render_request([{"role": "user", "content": "Find order 7"}], tools=3, turn=2)
'[tools 3] [turn 2] Find order 7'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CATEGORIES", "MAX_RENDER_CHARS", "render_request"]

CATEGORIES: tuple[str, ...] = ("simple", "general", "reasoning", "code", "agent")

# About 1 KB of characters is ~250 word pieces: more than the 128-token window the model
# reads, and cheap to tokenise (a 50 KB message costs ~21 ms to tokenise uncut).
MAX_RENDER_CHARS = 1000
_SYSTEM_CHARS = 240
# When a message is cut, keep its end too: a pasted document is usually followed by the ask.
_TAIL_CHARS = 200


def _content_text(content: Any) -> str:
    """Flatten OpenAI content (a string or a list of typed parts) into plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return str(content)


def _cut(text: str, limit: int) -> str:
    if len(text) > limit * 4:
        # Bound the whitespace normalisation below on huge inputs; keep both ends.
        text = f"{text[: limit * 2]} {text[-limit * 2 :]}"
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    if limit <= _TAIL_CHARS * 2:
        return text[:limit]
    head = limit - _TAIL_CHARS - 3
    return f"{text[:head]} … {text[-_TAIL_CHARS:]}"


def render_request(
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: int = 0,
    turn: int = 1,
) -> str:
    """Render OpenAI-style chat ``messages`` into one short string for the classifier.

    The last user message is the text that matters; a system message contributes its first
    240 characters. ``tools`` is the number of tools the request offers and ``turn`` its turn
    in the conversation (at least the number of user messages). The result is at most about
    ``MAX_RENDER_CHARS`` characters, so very long inputs cost little to tokenise.
    """
    system = ""
    last_user = ""
    users = 0
    for message in messages:
        role = message.get("role")
        text = _content_text(message.get("content"))
        if role == "system" and not system:
            system = text
        elif role == "user":
            users += 1
            last_user = text
    if not last_user and messages:
        last_user = _content_text(messages[-1].get("content"))
    turn = max(turn, users, 1)

    prefix: list[str] = []
    if tools > 0:
        prefix.append(f"[tools {tools}]")
    if turn > 1:
        prefix.append(f"[turn {turn}]")
    budget = MAX_RENDER_CHARS
    if system.strip():
        sys_text = _cut(system, _SYSTEM_CHARS)
        prefix.append(f"[system] {sys_text} [user]")
        budget -= len(sys_text)
    prefix.append(_cut(last_user, budget))
    return " ".join(p for p in prefix if p)
