"""Average the weights of several fine-tuned checkpoints into one model (a uniform soup).

Fine-tuning the same base with different seeds lands in one basin of the loss, and the mean of
those weights usually scores at least as well as the best of them on data none of them saw,
at the cost of one model at run time (Wortsman et al., "Model soups", ICML 2022). The
ingredients must share their architecture and their classification head's initial weights:
train them with the same ``init_seed`` and different ``seed`` (the seed then changes only the
data order and dropout), otherwise the heads sit in different places and their mean means
nothing.

Example::

    llm-router classifier train --seed 13 --init-seed 13 --out .cache/classifier/s13
    llm-router classifier train --seed 14 --init-seed 13 --out .cache/classifier/s14
    llm-router classifier soup .cache/classifier/s13 .cache/classifier/s14 \\
        --out .cache/classifier/checkpoint
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["SoupError", "soup", "wise_ft"]


class SoupError(ValueError):
    """The checkpoints cannot be averaged (too few, or different shapes or heads)."""


def _summary(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / "train_summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _weights(checkpoint: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = checkpoint / "model.safetensors"
    if not path.is_file():
        raise SoupError(f"{checkpoint} is not a checkpoint: it has no model.safetensors")
    return load_file(str(path))


def _write_checkpoint(
    out_dir: Path, state: dict[str, Any], like: Path, summary: dict[str, Any]
) -> None:
    """Write ``state`` as a checkpoint beside the tokenizer and config files of ``like``."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    for item in like.iterdir():
        if item.name not in {"model.safetensors", "train_summary.json"} and item.is_file():
            shutil.copyfile(item, out_dir / item.name)
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))


def soup(checkpoints: list[Path], out_dir: Path) -> dict[str, Any]:
    """Write the uniform weight average of ``checkpoints`` to ``out_dir``; return its summary.

    Every floating-point tensor is averaged; integer buffers (position ids) must be equal.
    The tokenizer and config come from the first checkpoint. Raises :class:`SoupError` when
    the checkpoints differ in architecture, or were trained from different head
    initialisations (their ``init_seed`` differs).
    """
    import torch

    if len(checkpoints) < 2:
        raise SoupError(f"a soup needs at least two checkpoints, got {len(checkpoints)}")
    summaries = [_summary(c) for c in checkpoints]
    inits = {s.get("init_seed", s.get("seed")) for s in summaries}
    if len(inits) > 1:
        seeds = ", ".join(sorted(map(str, inits)))
        raise SoupError(
            f"checkpoints start from different head initialisations (init seeds {seeds}): "
            "train them with one --init-seed"
        )
    states = [_weights(c) for c in checkpoints]
    first = states[0]
    for checkpoint, state in zip(checkpoints[1:], states[1:], strict=True):
        if state.keys() != first.keys() or any(
            state[k].shape != first[k].shape for k in first
        ):
            raise SoupError(f"{checkpoint} does not have the architecture of {checkpoints[0]}")
    mean: dict[str, Any] = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            stacked = torch.stack([s[key].to(torch.float64) for s in states])
            mean[key] = stacked.mean(0).to(tensor.dtype).contiguous()
        else:
            if any(not torch.equal(s[key], tensor) for s in states[1:]):
                raise SoupError(f"integer tensor {key} differs between checkpoints")
            mean[key] = tensor
    summary: dict[str, Any] = {
        **{k: v for k, v in summaries[0].items() if k not in {"seed", "train_seconds",
                                                               "val_accuracy"}},
        "soup": [
            {"checkpoint": c.name, "seed": s.get("seed"), "val_accuracy": s.get("val_accuracy"),
             **({"extra": s["extra"]} if "extra" in s else {})}
            for c, s in zip(checkpoints, summaries, strict=True)
        ],
        "train_seconds": round(sum(float(s.get("train_seconds", 0.0)) for s in summaries), 1),
    }
    _write_checkpoint(out_dir, mean, checkpoints[0], summary)
    logger.info("soup of %d checkpoints written to %s", len(checkpoints), out_dir)
    return summary


def _start_state(summary: dict[str, Any]) -> dict[str, Any]:
    """The encoder a checkpoint was fine-tuned from: its base, cut to its layer count."""
    from classifier_onnx.training.convert import MINILM, load_base_for_classification
    from classifier_onnx.training.train import LABELS

    layers = summary.get("layers")
    model, _ = load_base_for_classification(
        str(summary.get("base", MINILM)), num_labels=len(LABELS),
        layers=int(layers) if layers else None,
    )
    return {k: v.detach() for k, v in model.state_dict().items()}


def wise_ft(
    checkpoint: Path,
    out_dir: Path,
    alpha: float,
    start: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Interpolate a fine-tuned checkpoint's encoder back towards the weights it started from.

    WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): the
    encoder becomes ``(1 - alpha) * start + alpha * fine-tuned`` (``alpha`` 1 is the checkpoint
    unchanged), keeping more of the pretrained features that fine-tuning bends towards the
    training sources. The classification head has no pretrained counterpart (it started
    random), so it stays as fine-tuned. ``start`` is the starting state dict; by default the
    base recorded in the checkpoint's ``train_summary.json``, cut to its layer count.
    """
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise SoupError(f"alpha must lie in [0, 1], got {alpha}")
    summary = _summary(checkpoint)
    tuned = _weights(checkpoint)
    start = start if start is not None else _start_state(summary)
    encoder = [k for k in tuned if k.startswith("distilbert.")]
    missing = [k for k in encoder if k not in start or start[k].shape != tuned[k].shape]
    if missing:
        raise SoupError(f"{checkpoint} does not have the start's architecture ({missing[0]})")
    mixed: dict[str, Any] = {}
    for key, tensor in tuned.items():
        if key in encoder and tensor.is_floating_point():
            both = (1.0 - alpha) * start[key].to(torch.float64) + alpha * tensor.to(torch.float64)
            mixed[key] = both.to(tensor.dtype).contiguous()
        else:
            mixed[key] = tensor
    result = {**summary, "wise_ft": {"checkpoint": str(checkpoint), "alpha": alpha}}
    _write_checkpoint(out_dir, mixed, checkpoint, result)
    logger.info("WiSE-FT (alpha %.2f) of %s written to %s", alpha, checkpoint, out_dir)
    return result
