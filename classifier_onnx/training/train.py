"""Fine-tune the classifier: one DistilBERT forward pass, six outputs.

The model is a plain ``DistilBertForSequenceClassification`` with ``num_labels = 6``: logits
0-4 are the categories (softmax, cross-entropy) and logit 5 is the complexity (sigmoid,
squared error against the label). A plain text-classification model exports through optimum
unchanged, and the runtime applies softmax and sigmoid itself.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from classifier_onnx.features import CATEGORIES, render_request
from classifier_onnx.training.data import load_jsonl

logger = logging.getLogger(__name__)

COMPLEXITY_LABEL = "complexity"
LABELS = (*CATEGORIES, COMPLEXITY_LABEL)


def example_text(row: dict[str, Any]) -> str:
    """Render a dataset row exactly as the runtime renders a request."""
    return render_request(
        row["messages"], tools=int(row.get("tools", 0)), turn=int(row.get("turn", 1))
    )


def _batches(
    lengths: list[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Length-bucketed batches: shuffle, sort within windows of 50 batches, shuffle batches.

    Padding per batch to similar lengths makes CPU training several times faster than
    padding everything to ``max_tokens``.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def training_device(name: str) -> Any:
    """The ``torch.device`` to train on: ``cpu`` (the default, reproducible on any machine),
    ``cuda``/``cuda:N``/``mps``, or ``auto`` (CUDA when torch sees it, else the CPU).

    Raises ``ValueError`` for a device torch cannot use here, rather than failing at the
    first batch."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown training device {name!r}: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"training device {name!r}: torch sees no CUDA device here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"training device {name!r}: torch sees {torch.cuda.device_count()} CUDA "
                "device(s)"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"training device {name!r}: torch sees no MPS device here")
    elif dev.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"training device {name!r}: use cpu, cuda[:N], mps or auto")
    return dev


def distilled_complexity(label: Any, category: Any, teacher_logit: Any, weight: float) -> Any:
    """The complexity target under distillation: ``weight`` of the teacher's score, the rest
    the label's. Rows from ``learn`` (no category, ``-100``) correct the teacher's
    complexity, so they keep their label."""
    import torch

    mixed = (1.0 - weight) * label + weight * torch.sigmoid(teacher_logit)
    return torch.where(category >= 0, mixed, label)


def outputs_in_order(
    forward: Any, tokenizer: Any, texts: list[str], width: int, max_tokens: int,
    batch_size: int,
) -> Any:
    """``forward(encoded batch)`` -> ``(rows, width)`` for every text, returned in the texts'
    order; batched by length so that padding stays short, without gradients."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), width)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in chunk], truncation=True, max_length=max_tokens,
                padding=True, return_tensors="pt",
            )
            out[chunk] = forward(enc)
    return out


def _teacher_logits(
    checkpoint: Path, texts: list[str], max_tokens: int, batch_size: int
) -> Any:
    """The teacher checkpoint's logits for every training text, computed once, in order."""
    from transformers import DistilBertForSequenceClassification

    from classifier_onnx.training.convert import load_tokenizer

    started = time.perf_counter()
    model = DistilBertForSequenceClassification.from_pretrained(str(checkpoint))
    model.eval()
    out = outputs_in_order(lambda enc: model(**enc).logits, load_tokenizer(str(checkpoint)),
                           texts, model.config.num_labels, max_tokens, batch_size)
    logger.info("teacher logits for %d rows (%.0f s)", len(texts), time.perf_counter() - started)
    return out


def train(
    data_dir: Path,
    out_dir: Path,
    *,
    base: str = "all-MiniLM-L6-v2",
    extra: list[Path] | None = None,
    epochs: float = 2.0,
    batch_size: int = 16,
    lr: float = 1e-4,
    max_tokens: int = 128,
    complexity_weight: float = 2.0,
    seed: int = 13,
    init_seed: int | None = None,
    threads: int | None = None,
    max_steps: int | None = None,
    limit: int | None = None,
    layers: int | None = None,
    teacher: Path | None = None,
    distill_weight: float = 0.5,
    temperature: float = 2.0,
    format_noise: float = 0.0,
    tool_noise: float = 0.0,
    source_adversary: float = 0.0,
    ffn_dim: int | None = None,
    linear_probe: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train on ``data_dir/train.jsonl`` (+ ``extra`` JSONL files, e.g. from ``learn``).

    With ``teacher`` (a checkpoint written by an earlier ``train``, typically the full
    6-layer model) the student also learns the teacher's outputs (knowledge distillation):
    the category loss mixes the label's cross-entropy with the KL divergence to the
    teacher's softened distribution (``distill_weight``, ``temperature``), and the
    complexity target mixes the label with the teacher's score (except on rows from
    ``learn``, whose complexity corrects the teacher's).

    ``format_noise`` is the rate of train-time format variation
    (:func:`classifier_onnx.training.augment.vary_format`): question markers and markdown
    emphasis are redrawn on each draw of a row, so that no source's formatting becomes a
    category cue; ``tool_noise`` the rate at which a non-agent row gains offered tools. Both
    draw from their own random stream: the data order and dropout stay those of ``seed``.

    ``source_adversary`` (0: off) is the weight of a conditional source adversary
    (:mod:`classifier_onnx.training.adversary`): a head that tells apart the sources of each
    row's category from the representation the classifier reads, with its gradient reversed
    into the encoder, ramped up over training. The head is not saved; its initial weights come
    from their own seed, so data order and dropout stay those of ``seed``.

    ``ffn_dim`` prunes every layer's feed-forward block to that many neurons before
    fine-tuning (:mod:`classifier_onnx.training.prune`; 1536 in the base), chosen by their
    importance on up to 512 training texts: less arithmetic per token, a faster model.

    ``linear_probe`` (epochs; 0: off) fits the head on the frozen encoder's features before
    fine-tuning everything (LP-FT, :mod:`classifier_onnx.training.probe`), so the first
    steps do not bend the pretrained features to a random head.

    ``device`` (:func:`training_device`) is where the steps run; the base model, the head's
    initial weights and the data order are made on the CPU whatever the device, so only the
    arithmetic (and dropout's random stream) differs between devices.

    ``init_seed`` (default: ``seed``) fixes the classification head's initial weights apart
    from ``seed``, which then changes only the data order and dropout: checkpoints trained
    with one ``init_seed`` can be averaged into a soup (``classifier_onnx.training.soup``).

    Writes a transformers checkpoint (``config.json``, ``model.safetensors``, tokenizer) to
    ``out_dir`` and returns a summary with the validation scores.
    """
    import torch
    import torch.nn.functional as F
    from transformers import get_linear_schedule_with_warmup

    from classifier_onnx.training.augment import vary_format
    from classifier_onnx.training.convert import load_base_for_classification

    dev = training_device(device)
    head_seed = seed if init_seed is None else init_seed
    torch.manual_seed(head_seed)
    rng = random.Random(seed)
    format_rng = random.Random(f"{seed}:format")
    if threads:
        torch.set_num_threads(threads)
    rows = load_jsonl(data_dir / "train.jsonl")
    extra_files: list[dict[str, Any]] = []
    for path in extra or []:
        added = load_jsonl(path)
        rows.extend(added)
        extra_files.append({"file": path.name, "rows": len(added)})
    if limit:
        rows = rows[:limit]
    val_rows = load_jsonl(data_dir / "val.jsonl") if (data_dir / "val.jsonl").exists() else []
    if limit:
        random.Random(seed).shuffle(val_rows)
        val_rows = val_rows[: max(1, limit // 4)]

    model, tokenizer = load_base_for_classification(base, num_labels=len(LABELS), layers=layers)
    texts = [example_text(r) for r in rows]
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}
    if ffn_dim is not None and ffn_dim < model.config.hidden_dim:
        from classifier_onnx.training.prune import ffn_importance, prune_ffn

        sample = random.Random(f"{seed}:prune").sample(range(len(rows)), min(512, len(rows)))
        with torch.random.fork_rng():  # new layers draw weights: keep the seed's stream
            prune_ffn(model, ffn_dim, ffn_importance(
                model, tokenizer, [texts[i] for i in sample], max_tokens))
    if linear_probe:
        from classifier_onnx.training.probe import encoder_features, fit_head

        fit_head(
            model,
            encoder_features(model, tokenizer, texts, max_tokens),
            torch.tensor([cat_index.get(r.get("category") or "", -100) for r in rows]),
            torch.tensor([float(r["complexity"]) for r in rows]),
            epochs=linear_probe, complexity_weight=complexity_weight, seed=head_seed,
        )
    if init_seed is not None:
        torch.manual_seed(seed)  # the head is initialised: the rest follows ``seed``
    adversary = None
    if source_adversary:
        from classifier_onnx.training.adversary import SourceAdversary, ramp

        with torch.random.fork_rng():
            torch.manual_seed(head_seed + 1_000_003)
            adversary = SourceAdversary(
                model.config.dim,
                [(str(r.get("category")), str(r.get("source"))) for r in rows
                 if r.get("category") and r.get("source")],
                CATEGORIES,
            )
    model.to(dev)
    if adversary is not None:
        adversary.to(dev)
    model.config.id2label = dict(enumerate(LABELS))
    model.config.label2id = {label: i for i, label in enumerate(LABELS)}

    def encode(batch_rows: list[dict[str, Any]]) -> Any:
        return tokenizer(
            [example_text(r) for r in batch_rows],
            truncation=True,
            max_length=max_tokens,
            padding=True,
            return_tensors="pt",
        ).to(dev)

    encoded = tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = max_steps or max(1, int(steps_per_epoch * epochs))
    params = list(model.parameters()) + (list(adversary.parameters()) if adversary else [])
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(0.06 * total), total
    )

    teacher_logits = (
        _teacher_logits(teacher, texts, max_tokens, batch_size=64).to(dev) if teacher else None
    )
    # The labels' share of the category loss: all of it without a teacher.
    hard = 1.0 - distill_weight if teacher_logits is not None else 1.0

    model.train()
    step = 0
    started = time.perf_counter()
    while step < total:
        for batch_ids in _batches(lengths, batch_size, rng):
            if step >= total:
                break
            batch_rows = [vary_format(rows[i], format_rng, format_noise, tool_noise)
                          for i in batch_ids]
            enc = encode(batch_rows)
            # Rows from ``learn`` may carry no category (-100): they teach complexity only.
            target_cat = torch.tensor(
                [cat_index.get(r.get("category") or "", -100) for r in batch_rows], device=dev
            )
            target_cx = torch.tensor([float(r["complexity"]) for r in batch_rows], device=dev)
            out = model(**enc, output_hidden_states=adversary is not None)
            logits = out.logits
            if teacher_logits is not None:
                taught = teacher_logits[batch_ids]
                target_cx = distilled_complexity(
                    target_cx, target_cat, taught[:, -1], distill_weight
                )
                n = len(CATEGORIES)
                loss = distill_weight * temperature**2 * F.kl_div(
                    F.log_softmax(logits[:, :n] / temperature, -1),
                    F.log_softmax(taught[:, :n] / temperature, -1),
                    reduction="batchmean",
                    log_target=True,
                )
            else:
                loss = torch.zeros((), device=dev)
            loss = loss + complexity_weight * F.mse_loss(
                torch.sigmoid(logits[:, -1]), target_cx
            )
            if bool((target_cat >= 0).any()):
                loss = loss + hard * F.cross_entropy(
                    logits[:, : len(CATEGORIES)], target_cat, label_smoothing=0.05,
                    ignore_index=-100,
                )
            if adversary is not None:
                adv_loss = adversary.loss(
                    out.hidden_states[-1][:, 0], batch_rows, target_cat,
                    source_adversary * ramp(step / total),
                )
                loss = loss + adv_loss
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if adversary is not None:
                torch.nn.utils.clip_grad_norm_(adversary.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % 20 == 0 or step == total:
                logger.info(
                    "step %d/%d loss %.4f%s (%.0f s)", step, total, loss.item(),
                    f" source-adversary {adv_loss.item():.3f}" if adversary else "",
                    time.perf_counter() - started,
                )
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    summary: dict[str, Any] = {
        "base": base,
        "layers": model.config.n_layers,
        "ffn_dim": model.config.hidden_dim,
        "examples": len(rows),
        "steps": step,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "max_tokens": max_tokens,
        "seed": seed,
        "init_seed": head_seed,
        **({"extra": extra_files} if extra_files else {}),
        **({"format_noise": format_noise} if format_noise else {}),
        **({"tool_noise": tool_noise} if tool_noise else {}),
        **({"source_adversary": source_adversary} if source_adversary else {}),
        **({"linear_probe_epochs": linear_probe} if linear_probe else {}),
        **({"device": str(dev)} if dev.type != "cpu" else {}),
        **(
            {"teacher": str(teacher), "distill_weight": distill_weight,
             "temperature": temperature}
            if teacher else {}
        ),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    if val_rows:
        correct = 0
        with torch.no_grad():
            for start in range(0, len(val_rows), 64):
                chunk = val_rows[start : start + 64]
                pred = model(**encode(chunk)).logits[:, : len(CATEGORIES)].argmax(-1).tolist()
                pairs = zip(pred, chunk, strict=True)
                correct += sum(CATEGORIES[p] == r["category"] for p, r in pairs)
        summary["val_accuracy"] = round(correct / len(val_rows), 4)
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("trained: %s", summary)
    return summary
