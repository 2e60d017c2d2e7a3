"""Where training runs: ``--device`` picks it, a device torch cannot use is refused before any
work, and the starting point (base, head, data order) does not depend on the device.

These tests need neither the base-weights package nor built data: a small random DistilBERT
with the shipped model's tokenizer stands in for the base, so they run wherever torch and
transformers do (on a GPU machine ``auto`` trains on CUDA; elsewhere on the CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier_onnx.features import CATEGORIES

PROMPTS = {
    "simple": ["what time does the store open", "hi there", "thanks a lot"],
    "general": ["I was charged twice for order #12345", "write a short note to my landlord"],
    "reasoning": ["if 3 pens cost 12 dollars what do 7 pens cost", "prove that 17 is prime"],
    "code": ["fix this python bug: list index out of range", "write a SQL join"],
    "agent": ["look up the order data through the orders API", "book a table via the tool"],
}


@pytest.fixture()
def random_base(tmp_path: Path) -> str:
    """A random 1-layer, 32-wide DistilBERT with the shipped model's tokenizer, as a folder
    ``train(base=...)`` loads like any local model."""
    from classifier_onnx.training.convert import random_base as make

    return make(tmp_path / "base", layers=1, dim=32, heads=2, ffn_dim=64)


@pytest.fixture()
def small_data(tmp_path: Path) -> Path:
    """Train and validation rows of every category, with sources for the adversary."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"messages": [{"role": "user", "content": text}], "category": category,
         "complexity": CATEGORIES.index(category) / 4, "source": f"{category}-{i % 2}",
         "tools": int(category == "agent")}
        for category, texts in PROMPTS.items() for i, text in enumerate(texts)
    ]
    for name in ("train.jsonl", "val.jsonl"):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_device_names_are_checked() -> None:
    import torch

    from classifier_onnx.training.train import training_device

    assert training_device("cpu") == torch.device("cpu")
    assert training_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown training device 'tpu'"):
        training_device("tpu")
    with pytest.raises(ValueError, match="use cpu, cuda"):
        training_device("meta")
    beyond = f"cuda:{torch.cuda.device_count()}"  # one past the last CUDA device, if any
    with pytest.raises(ValueError, match=f"training device '{beyond}'"):
        training_device(beyond)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            training_device("cuda")


def test_cli_refuses_an_unusable_device_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from classifier_onnx.cli import app

    out = tmp_path / "checkpoint"
    result = CliRunner().invoke(
        app, ["train", "--data", str(tmp_path), "--out", str(out), "--device", "tpu"]
    )
    assert result.exit_code == 2
    assert "--device" in result.output and "unknown training device 'tpu'" in result.output
    assert not out.exists()


def test_training_starts_from_the_same_point_on_any_device(
    tmp_path: Path, random_base: str, small_data: Path
) -> None:
    """With a zero learning rate nothing moves, so the checkpoint is the starting point: the
    same on the chosen device as on the CPU, bit for bit."""
    from safetensors.torch import load_file

    from classifier_onnx.training.train import train

    common = {"base": random_base, "epochs": 1, "batch_size": 4, "max_tokens": 16,
              "max_steps": 2, "lr": 0.0, "seed": 5}
    train(small_data, tmp_path / "cpu", device="cpu", **common)  # type: ignore[arg-type]
    train(small_data, tmp_path / "auto", device="auto", **common)  # type: ignore[arg-type]
    on_cpu = load_file(str(tmp_path / "cpu" / "model.safetensors"))
    on_auto = load_file(str(tmp_path / "auto" / "model.safetensors"))
    assert on_cpu.keys() == on_auto.keys()
    assert all(bool((on_cpu[k] == on_auto[k]).all()) for k in on_cpu)


def test_training_runs_on_the_chosen_device(
    tmp_path: Path, random_base: str, small_data: Path
) -> None:
    """Every part of a step (teacher logits, source adversary, format noise) runs on the
    device, and the checkpoint loads back on the CPU."""
    import torch
    from transformers import DistilBertForSequenceClassification

    from classifier_onnx.training.train import train

    common = {"base": random_base, "epochs": 1, "batch_size": 4, "max_tokens": 16,
              "lr": 1e-3}
    train(small_data, tmp_path / "teacher", max_steps=1, **common)  # type: ignore[arg-type]
    learned = tmp_path / "learned.jsonl"  # rows from `learn`, trained on beside the base data
    learned.write_text((small_data / "train.jsonl").read_text().split("\n", 1)[0] + "\n")
    summary = train(
        small_data, tmp_path / "student", device="auto", max_steps=6,
        teacher=tmp_path / "teacher", source_adversary=0.5, format_noise=0.5, tool_noise=0.5,
        extra=[learned], **common,  # type: ignore[arg-type]
    )
    assert summary["extra"] == [{"file": "learned.jsonl", "rows": 1}]
    assert summary["examples"] == sum(len(t) for t in PROMPTS.values()) + 1
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert summary.get("device", "cpu").split(":")[0] == expected
    assert summary["steps"] == 6 and 0.0 <= summary["val_accuracy"] <= 1.0
    model = DistilBertForSequenceClassification.from_pretrained(str(tmp_path / "student"))
    assert next(model.parameters()).device.type == "cpu"
    from transformers import DistilBertModel

    start = DistilBertModel.from_pretrained(random_base).embeddings.word_embeddings.weight
    assert not torch.equal(model.distilbert.embeddings.word_embeddings.weight, start)
