"""Train-time format noise (classifier_onnx.training.augment)."""

from __future__ import annotations

import copy
import random
from collections import Counter
from typing import Any

import pytest

from classifier_onnx.training.augment import vary_format


def row(content: str, category: str | None = "general", tools: int = 0) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": content}],
            "tools": tools, "category": category, "complexity": 0.2, "source": "s"}


def last_user(r: dict[str, Any]) -> str:
    return str(r["messages"][-1]["content"])


def test_rate_zero_is_the_row_itself() -> None:
    r = row("Q: Who was a prisoner?")
    assert vary_format(r, random.Random(1), 0.0) is r


def test_the_input_row_is_never_changed() -> None:
    r = row("**Bug:** upload fails on UTF-8 names?")
    before = copy.deepcopy(r)
    for seed in range(20):
        vary_format(r, random.Random(seed), 1.0)
    assert r == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Q: Who was a prisoner?", "Who was a prisoner?"),
        ("Question: how many rows are there? A:", "how many rows are there?"),
        ("**Your character:** You are Sam.", "Your character: You are Sam."),
    ],
)
def test_markers_and_emphasis_that_are_there_are_dropped(text: str, expected: str) -> None:
    # At rate 1 both variations apply; the second one (emphasis) sees the first's output.
    out = last_user(vary_format(row(text), random.Random(3), 1.0))
    assert out.replace("**", "") == expected
    assert not out.lower().startswith(("q:", "question:"))


def test_a_plain_question_can_gain_a_marker_and_emphasis() -> None:
    outs = [last_user(vary_format(row("What are your store hours?"), random.Random(s), 1.0))
            for s in range(30)]
    assert all(o.replace("**", "").startswith(("Q: ", "Question: ")) for o in outs)
    assert all("**" in o for o in outs)
    # A statement is not made into a question.
    stated = last_user(vary_format(row("Summarise: the cat sat."), random.Random(0), 1.0))
    assert stated.replace("**", "") == "Summarise: the cat sat."
    assert stated.startswith("**Summarise:**")


def test_only_non_agent_rows_without_tools_gain_tools() -> None:
    rng = random.Random(5)
    assert vary_format(row("hi", "simple"), rng, 0.0, 1.0)["tools"] in (1, 2, 4, 8, 12)
    assert vary_format(row("hi", "simple", tools=3), rng, 0.0, 1.0)["tools"] == 3
    assert vary_format(row("book it", "agent"), rng, 0.0, 1.0)["tools"] == 0
    # Rows from `learn` carry no category: they keep what the request offered.
    assert vary_format(row("hi", None), rng, 0.0, 1.0)["tools"] == 0
    # Tools have their own rate: the text variations alone never add any.
    assert all(vary_format(row("hi", "simple"), rng, 1.0)["tools"] == 0 for _ in range(50))


def test_the_rate_is_the_share_of_rows_varied() -> None:
    rng = random.Random(13)
    draws = [vary_format(row("Is the store on Main Street open on Sundays?", "simple"), rng,
                         0.2, 0.2) for _ in range(2000)]
    counts = Counter(
        ("marker" if last_user(d).replace("**", "").startswith(("Q:", "Question:")) else "")
        + ("bold" if "**" in last_user(d) else "")
        + ("tools" if d["tools"] else "")
        for d in draws
    )
    share = {k: sum(v for key, v in counts.items() if k in key) / len(draws)
             for k in ("marker", "bold", "tools")}
    assert all(0.16 < s < 0.24 for s in share.values()), share
    # The system message is never touched.
    assert all(d["messages"][0]["content"] == "Be brief." for d in draws)
