"""Train-time format noise: surface formatting must not decide a category.

Each source writes its prompts its own way, and a model picks that up as a cue: in the base
data every "Q: ..." prompt is SQL (``evals/sql``) and nearly every ``**bold**`` one is a
software issue (``swe_lancer``), so a reading-comprehension question "Q: Who was a
prisoner?" was filed as code with 0.97 confidence. Live traffic formats every kind of request
every way. ``vary_format`` redraws three such signals on every draw of a training row, for
every category alike:

* question markers: a leading ``Q:``/``Question:`` is dropped, or a question gains one;
* markdown emphasis: ``**`` is dropped, or the message's opening label or words are bolded;
* offered tools (its own rate, off by default): a non-agent request gains a tool list
  (clients often send their tools with every request; a request that only asks for a fact
  stays ``simple``).

Measured at 0.2 against the same runs without noise (the model card has the details): with
tools too, 6-layer seeds 13 and 18 scored 0.844 and 0.829 on the held-out sources (0.875 and
0.873 without): with tools weakened as a cue the model leaned on BFCL's plain-question
wording, and FreshQA's questions without tools went to agent (22 of 113). Markers and
markdown only: seeds 13, 14, 15, 18 scored 0.880, 0.866, 0.857, 0.841 (without: 0.875, 0.813,
0.859, 0.873), their soup 0.883 (0.866 without) but less sure of the mission examples; 3
layers 0.878 (0.872 without). No consistent gain, so the shipped model was not trained with
it.

Only training rows are varied (the split files, and so the validation and held-out scores,
are unchanged), and a rate of 0 leaves every row as it is.
"""

from __future__ import annotations

import random
import re
from typing import Any

__all__ = ["vary_format"]

_MARKER = re.compile(r"^\s*(?:Q|Question)\s*:\s*", re.IGNORECASE)
_ANSWER_CUE = re.compile(r"\s*\bA\s*:\s*$")
_LABEL = re.compile(r"^([A-Z][\w ]{0,28}:)(?=\s)")
_TOOL_COUNTS = (1, 2, 4, 8, 12)


def _questions(text: str, rng: random.Random) -> str:
    if _MARKER.match(text):
        return _ANSWER_CUE.sub("", _MARKER.sub("", text, count=1))
    if text.rstrip().endswith("?"):
        return f"{rng.choice(('Q: ', 'Question: '))}{text}"
    return text


def _emphasis(text: str, rng: random.Random) -> str:
    if "**" in text:
        return text.replace("**", "")
    label = _LABEL.match(text)
    if label:
        return f"**{label.group(1)}**{text[label.end():]}"
    words = text.split(" ")
    n = rng.randint(1, 3)
    if len(words) <= n:
        return text
    return f"**{' '.join(words[:n])}** {' '.join(words[n:])}"


def vary_format(
    row: dict[str, Any], rng: random.Random, rate: float, tools_rate: float = 0.0
) -> dict[str, Any]:
    """A copy of ``row`` whose last user message and tool count are redrawn: the marker and
    emphasis variations apply with probability ``rate``, the added tools with probability
    ``tools_rate``. ``row`` itself is never changed."""
    if rate <= 0 and tools_rate <= 0:
        return row
    messages = [dict(m) for m in row["messages"]]
    users = [m for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
    if users:
        last = users[-1]
        if rng.random() < rate:
            last["content"] = _questions(last["content"], rng)
        if rng.random() < rate:
            last["content"] = _emphasis(last["content"], rng)
    tools = int(row.get("tools", 0))
    if (row.get("category") not in ("agent", None) and tools == 0 and tools_rate > 0
            and rng.random() < tools_rate):
        tools = rng.choice(_TOOL_COUNTS)
    return {**row, "messages": messages, "tools": tools}
