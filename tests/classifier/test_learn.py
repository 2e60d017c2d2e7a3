"""learn: outcome records -> labelled rows, by the documented rules."""

from __future__ import annotations

import json
from pathlib import Path

from classifier_onnx.training.learn import learn, records_to_examples


def _record(text: str, **fields: object) -> dict[str, object]:
    return {"request": {"id": text, "messages": [{"role": "user", "content": text}]}, **fields}


def test_fast_success_confirms_low_complexity() -> None:
    [row] = records_to_examples([_record("hi", kind="response", tier="fast", category="simple")])
    assert row["complexity"] < 0.3
    assert row["category"] == "simple"
    [row] = records_to_examples(
        [_record("hi", kind="response", tier="fast", complexity=0.28)]
    )
    assert row["complexity"] == 0.25
    assert row["category"] is None


def test_uproute_raises_to_the_next_tier() -> None:
    rows = records_to_examples([
        _record("a", kind="uproute", tier="fast", reason="invalid_output", complexity=0.1),
        _record("b", kind="uproute", tier="balanced", reason="timeout"),
        _record("c", kind="response", tier="fast", reason="invalid_output"),
    ])
    by_text = {r["messages"][0]["content"]: r["complexity"] for r in rows}
    assert 0.3 <= by_text["a"] < 0.7
    assert by_text["b"] >= 0.7
    assert 0.3 <= by_text["c"] < 0.7


def test_success_on_a_larger_tier_teaches_nothing() -> None:
    assert records_to_examples([_record("x", kind="response", tier="balanced")]) == []
    assert records_to_examples([{"kind": "uproute", "tier": "fast"}]) == []


def test_strongest_signal_per_request_wins() -> None:
    rows = records_to_examples([
        _record("q", kind="response", tier="fast", category="general"),
        _record("q", kind="uproute", tier="fast", reason="timeout"),
    ])
    assert len(rows) == 1
    assert rows[0]["complexity"] >= 0.3
    assert rows[0]["category"] == "general"


def test_tools_are_counted(tmp_path: Path) -> None:
    record = _record("book it", kind="uproute", tier="fast", reason="timeout")
    record["request"]["tools"] = [{"type": "function"}, {"type": "function"}]  # type: ignore[index]
    src = tmp_path / "records.jsonl"
    src.write_text(json.dumps(record) + "\n" + json.dumps(_record("z", kind="x")) + "\n")
    out = tmp_path / "rows.jsonl"
    assert learn(src, out) == {"records": 2, "examples": 1}
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["tools"] == 2


def test_learn_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from classifier_onnx.cli import app

    src = tmp_path / "records.jsonl"
    src.write_text(json.dumps(_record("q", kind="uproute", tier="balanced", reason="timeout")))
    out = tmp_path / "rows.jsonl"
    result = CliRunner().invoke(app, ["learn", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["complexity"] >= 0.7
