"""`llm-router classifier` refuses missing or empty inputs by name, before writing anything."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from classifier_onnx.cli import app
from classifier_onnx.scorer import default_model_dir


def _run(*args: str) -> tuple[int, str]:
    # Wide enough that rich's error box does not wrap a long temporary path.
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "1000"})
    return result.exit_code, " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def test_evaluate_on_a_folder_without_splits_keeps_the_card(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    card = (model / "MODEL_CARD.md").read_bytes()
    empty = tmp_path / "data"
    empty.mkdir()
    (empty / "test.jsonl").write_text("")  # present but without rows: still nothing to score
    code, output = _run("evaluate", "--model-dir", str(model), "--data", str(empty),
                        "--out", str(tmp_path / "report"))
    assert code == 2
    assert "holds none of heldout.jsonl, test.jsonl, chat_eval.jsonl, val.jsonl" in output
    assert (model / "MODEL_CARD.md").read_bytes() == card
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--data", "{tmp}/nope"], "'--data': dir '{tmp}/nope' does not exist"),
        (["train", "--data", "{tmp}/nope"], "'--data': dir '{tmp}/nope' does not exist"),
        (["train", "--data", "{tmp}"], "{tmp} has no train.jsonl"),
        (["train", "--data", "{tmp}", "--extra", "{tmp}/x.jsonl"],
         "'--extra': file '{tmp}/x.jsonl' does not exist"),
        (["export", "--checkpoint", "{tmp}/ck"], "'--checkpoint': dir '{tmp}/ck' does not exist"),
        (["soup", "{tmp}/a", "{tmp}/b"], "'checkpoints': dir '{tmp}/a' does not exist"),
        (["wise", "{tmp}/a"], "'checkpoint': dir '{tmp}/a' does not exist"),
        (["learn", "{tmp}/r.jsonl"], "'records': file '{tmp}/r.jsonl' does not exist"),
        (["export", "--checkpoint", "{tmp}", "--data", "{tmp}"],
         "{tmp} is not a checkpoint: it has no config.json"),
        (["soup", "{tmp}", "{tmp}"], "{tmp} is not a checkpoint: it has no model.safetensors"),
        (["wise", "{tmp}"], "{tmp} is not a checkpoint: it has no model.safetensors"),
        (["calibrate", "--data", "{tmp}/nope"], "'--data': dir '{tmp}/nope' does not exist"),
    ],
)
def test_missing_inputs_are_refused_by_name(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, output = _run(*(a.format(tmp=tmp_path) for a in args))
    assert code == 2, output
    assert message.format(tmp=tmp_path) in output
    assert "Traceback" not in output


def test_export_needs_rows_to_check_int8_against_fp32(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ck"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"category": "simple"}\n')  # not a check split
    code, output = _run("export", "--checkpoint", str(checkpoint), "--data", str(data),
                        "--model-dir", str(tmp_path / "model"), "--work", str(tmp_path / "w"))
    assert code == 2
    assert f"{data} has no heldout.jsonl or val.jsonl rows to check the int8 model" in output
    assert not (tmp_path / "model").exists() and not (tmp_path / "w").exists()
