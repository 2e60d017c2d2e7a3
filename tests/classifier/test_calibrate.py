"""The complexity calibration: fitted on the validation split, applied by the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from classifier_onnx import Scorer, default_model_dir, render_request


def test_fit_spreads_a_squeezed_score_and_keeps_its_order() -> None:
    pytest.importorskip("sklearn")
    from classifier_onnx.training.calibrate import fit_calibration

    rng = np.random.default_rng(0)
    labels = rng.uniform(0.0, 1.0, 500)
    raw = 0.35 + 0.3 * labels + rng.normal(0.0, 0.02, 500)  # ranks well, squeezed to ~0.35-0.65
    fitted = fit_calibration(raw.tolist(), labels.tolist())
    x, y = np.array(fitted["x"]), np.array(fitted["y"])
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
    assert 0.0 <= y[0] and y[-1] <= 1.0
    mapped = np.interp(raw, x, y)
    assert mapped.max() > 0.85 and mapped.min() < 0.15          # the thresholds are reachable
    assert np.mean(np.abs(mapped - labels)) < np.mean(np.abs(raw - labels)) / 2
    with pytest.raises(ValueError):
        fit_calibration([0.5], [0.5])


def test_scorer_applies_the_shipped_map(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    config = json.loads((model / "config.json").read_text())
    assert config["complexity_calibration"]["x"], "the shipped model carries its map"
    texts = [render_request([{"role": "user", "content": t}]) for t in (
        "hi there", "Prove that there are infinitely many primes of the form 4k+3.")]
    calibrated = [s.complexity for s in Scorer.load(model).score(texts)]

    del config["complexity_calibration"]
    (model / "config.json").write_text(json.dumps(config))
    raw = [s.complexity for s in Scorer.load(model).score(texts)]
    shipped = json.loads((default_model_dir() / "config.json").read_text())
    expected = np.interp(raw, shipped["complexity_calibration"]["x"],
                         shipped["complexity_calibration"]["y"])
    assert calibrated == pytest.approx(expected.tolist(), abs=1e-6)

    config["complexity_calibration"] = {"x": [0.0, 1.0], "y": [0.9, 0.9]}  # a constant map
    (model / "config.json").write_text(json.dumps(config))
    assert [s.complexity for s in Scorer.load(model).score(texts)] == pytest.approx([0.9, 0.9])


def test_calibrate_command_refits_from_validation_and_learned_rows(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from typer.testing import CliRunner

    from classifier_onnx.cli import app

    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    data = tmp_path / "data"
    data.mkdir()

    def row(text: str, complexity: float) -> str:
        return json.dumps({"messages": [{"role": "user", "content": text}], "tools": 0,
                           "turn": 1, "category": "simple", "complexity": complexity})

    (data / "val.jsonl").write_text("\n".join([
        row("hi", 0.05), row("what time is it in Paris?", 0.1),
        row("Prove the four colour theorem for planar maps.", 0.95)]) + "\n")
    learned = tmp_path / "learned.jsonl"   # `learn` output: may carry no category
    learned.write_text(json.dumps({"messages": [{"role": "user", "content": "Refactor this "
                                                 "1,000-line service into modules."}],
                                   "tools": 0, "turn": 1, "category": None,
                                   "complexity": 0.8}) + "\n")
    result = CliRunner().invoke(app, ["calibrate", "--model-dir", str(model), "--data",
                                      str(data), "--extra", str(learned)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 4
    fitted = json.loads((model / "config.json").read_text())["complexity_calibration"]
    assert fitted["y"][-1] >= 0.8 and fitted["y"][0] <= 0.1
