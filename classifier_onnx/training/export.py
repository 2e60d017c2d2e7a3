"""Export a trained checkpoint to ONNX with optimum, quantise it to int8, ship it.

``export`` writes the fp32 graph and the int8 graph into a work folder (not committed),
checks that the two agree on real held-out text (argmax agreement and accuracy drop), and
copies the int8 model, ``tokenizer.json`` and a small ``config.json`` into the model folder
that ``Scorer.load()`` reads.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from classifier_onnx.features import CATEGORIES

logger = logging.getLogger(__name__)

MODEL_VERSION = "0.4.0"


def export_fp32(checkpoint: Path, work_dir: Path) -> Path:
    """``optimum`` export of the checkpoint as a text-classification model; returns the file."""
    from optimum.exporters.onnx import main_export
    from torch.jit._trace import TracerWarning

    fp32_dir = work_dir / "fp32"
    with warnings.catch_warnings():
        # optimum drives torch's legacy TorchScript exporter, which announces its own
        # deprecation (and that of helpers it uses) and warns about traced constants that
        # are constant here (shapes stay dynamic: optimum validates the export).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", TracerWarning)
        main_export(
            str(checkpoint),
            output=str(fp32_dir),
            task="text-classification",
            do_validation=True,
        )
    return fp32_dir / "model.onnx"


def quantize_int8(fp32: Path, int8: Path) -> Path:
    """Dynamic int8 quantisation, per channel.

    ``quant_pre_process`` fails on this graph (incomplete symbolic shape inference), so the
    graph goes to ``quantize_dynamic`` directly. Per-channel weights halved the int8 drift
    from fp32 in earlier measurements; ``reduce_range`` made it worse.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    return int8


def agreement(
    model_dir: Path, fp32_file: str, int8_file: str, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Compare the int8 and fp32 graphs on ``rows``: argmax agreement and accuracy of each."""
    import numpy as np

    from classifier_onnx.scorer import Scorer
    from classifier_onnx.training.train import example_text

    texts = [example_text(r) for r in rows]
    truth = [r["category"] for r in rows]
    results: dict[str, Any] = {"rows": len(rows)}
    outputs = {}
    for name, file in (("fp32", fp32_file), ("int8", int8_file)):
        scorer = Scorer.load(model_dir, model_file=file, threads=2)
        outputs[name] = scorer.logits(texts)
        pred = outputs[name][:, : len(CATEGORIES)].argmax(-1)
        results[f"{name}_accuracy"] = float(
            np.mean([CATEGORIES[p] == t for p, t in zip(pred, truth, strict=True)])
        )
    a = outputs["fp32"][:, : len(CATEGORIES)].argmax(-1)
    b = outputs["int8"][:, : len(CATEGORIES)].argmax(-1)
    results["argmax_agreement"] = float(np.mean(a == b))
    cx = {name: 1 / (1 + np.exp(-out[:, -1])) for name, out in outputs.items()}
    results["complexity_max_abs_diff"] = float(np.max(np.abs(cx["fp32"] - cx["int8"])))
    results["accuracy_drop_points"] = round(
        100 * (results["fp32_accuracy"] - results["int8_accuracy"]), 3
    )
    return results


def export(
    checkpoint: Path,
    model_dir: Path,
    work_dir: Path,
    *,
    max_tokens: int = 128,
    check_rows: list[dict[str, Any]] | None = None,
    calibration_rows: list[dict[str, Any]] | None = None,
    max_drop_points: float = 0.5,
) -> dict[str, Any]:
    """Export, quantise, check, and install the int8 model into ``model_dir``; with
    ``calibration_rows`` (the validation split) also fit the complexity calibration."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fp32 = export_fp32(checkpoint, work_dir)
    int8 = quantize_int8(fp32, work_dir / "int8" / "model.onnx")

    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(int8, model_dir / "model.onnx")
    shutil.copyfile(checkpoint / "tokenizer.json", model_dir / "tokenizer.json")
    hf_config = json.loads((checkpoint / "config.json").read_text())
    summary_path = checkpoint / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    config = {
        "version": MODEL_VERSION,
        "labels": list(CATEGORIES),
        "complexity_index": len(CATEGORIES),
        "outputs": "logits[0:5] softmax over labels; logits[5] sigmoid = complexity",
        "max_tokens": max_tokens,
        "pad_token_id": hf_config.get("pad_token_id", 0),
        "quantization": "onnxruntime quantize_dynamic QInt8 per_channel",
        "base": summary.get("base", ""),
        "tiers": {"fast": [0.0, 0.3], "balanced": [0.3, 0.7], "frontier": [0.7, 1.0]},
    }
    (model_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    result: dict[str, Any] = {
        "fp32": str(fp32),
        "int8": str(int8),
        "fp32_mb": round(fp32.stat().st_size / 2**20, 1),
        "int8_mb": round(int8.stat().st_size / 2**20, 1),
    }
    if check_rows:
        # fp32 sits beside the int8 copy only for the check; it is never shipped.
        shutil.copyfile(fp32, model_dir / "model.fp32.onnx")
        try:
            result["agreement"] = agreement(model_dir, "model.fp32.onnx", "model.onnx", check_rows)
        finally:
            (model_dir / "model.fp32.onnx").unlink(missing_ok=True)
        drop = result["agreement"]["accuracy_drop_points"]
        if drop > max_drop_points:
            logger.warning("int8 loses %.2f accuracy points against fp32", drop)
        result["agreement_ok"] = drop <= max_drop_points
    if calibration_rows:
        from classifier_onnx.training.calibrate import calibrate

        result["calibration"] = calibrate(model_dir, calibration_rows)
    (work_dir / "export.json").write_text(json.dumps(result, indent=2))
    logger.info("exported: %s", result)
    return result
