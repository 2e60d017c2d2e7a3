"""Evaluate the ONNX classifier on held-out sources and write a report (markdown + PNGs).

Four splits, when the dataset has them: the held-out sources (never trained on, but used to
choose recipes), the untouched test sources (never trained on, never used to choose), real
chat prompts labelled one by one (``chat_eval.jsonl``: ShareGPT first turns, never trained
on) and the in-source validation rows.

Scores: accuracy, macro-F1, per-class precision/recall/F1, per-source accuracy, a confusion
matrix, a reliability (calibration) plot with expected calibration error, the complexity
error against its label and the tier mix it implies, and scoring latency.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from classifier_onnx.features import CATEGORIES

logger = logging.getLogger(__name__)

TIERS = (("fast", 0.0, 0.3), ("balanced", 0.3, 0.7), ("frontier", 0.7, 1.01))
# (dataset file, report key), in report order.
SPLITS = (
    ("heldout", "leave_source_out"),
    ("test", "untouched_test"),
    ("chat_eval", "real_chat"),
    ("val", "in_source"),
)
TITLES = {
    "leave_source_out": "Leave-source-out: whole sources never trained on",
    "untouched_test": "Untouched test sources: never trained on or used to tune a recipe",
    "real_chat": "Real chat prompts (ShareGPT first turns, labelled one by one, never trained on)",
    "in_source": "In-source validation (random 10% of training sources)",
}


def tier_of(complexity: float) -> str:
    return next(name for name, lo, hi in TIERS if lo <= complexity < hi)


def _metrics(truth: list[str], pred: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    p, r, f, n = precision_recall_fscore_support(
        truth, pred, labels=list(CATEGORIES), zero_division=0
    )
    return {
        "rows": len(truth),
        "accuracy": round(float(accuracy_score(truth, pred)), 4),
        "macro_f1": round(
            float(f1_score(truth, pred, labels=list(CATEGORIES), average="macro", zero_division=0)),
            4,
        ),
        "per_class": {
            c: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                "f1": round(float(f[i]), 4), "support": int(n[i])}
            for i, c in enumerate(CATEGORIES)
        },
    }


def _ece(conf: list[float], correct: list[bool], bins: int = 10) -> tuple[float, list[Any]]:
    table = []
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(conf) if lo < c <= hi or (b == 0 and c == 0)]
        if not idx:
            continue
        acc = sum(correct[i] for i in idx) / len(idx)
        mean_conf = sum(conf[i] for i in idx) / len(idx)
        total += len(idx) / len(conf) * abs(acc - mean_conf)
        table.append((lo, hi, len(idx), mean_conf, acc))
    return total, table


def _plots(out: Path, name: str, truth: list[str], pred: list[str], table: list[Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(6, 5))
    ConfusionMatrixDisplay.from_predictions(
        truth, pred, labels=list(CATEGORIES), ax=ax, colorbar=False, cmap="Blues"
    )
    ax.set_title(f"Confusion matrix ({name})")
    fig.tight_layout()
    fig.savefig(out / f"confusion_{name}.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot([t[3] for t in table], [t[4] for t in table], "o-", label="model")
    for t in table:
        ax.annotate(str(t[2]), (t[3], t[4]), fontsize=7, xytext=(3, -8), textcoords="offset points")
    ax.set_xlabel("confidence (max category probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability ({name})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"reliability_{name}.png", dpi=110)
    plt.close(fig)


def evaluate_split(
    scorer: Any, rows: list[dict[str, Any]], name: str, out: Path
) -> dict[str, Any]:
    from classifier_onnx.training.train import example_text

    texts = [example_text(r) for r in rows]
    scores = scorer.score(texts)
    truth = [r["category"] for r in rows]
    pred = [s.category for s in scores]
    result = _metrics(truth, pred)
    by_source: dict[str, list[bool]] = defaultdict(list)
    wrong: dict[str, Counter[str]] = defaultdict(Counter)
    for r, p in zip(rows, pred, strict=True):
        by_source[r["source"]].append(p == r["category"])
        if p != r["category"]:
            wrong[r["source"]][p] += 1
    result["per_source_accuracy"] = {
        s: {"accuracy": round(sum(v) / len(v), 4), "rows": len(v),
            "mistaken_for": dict(wrong[s].most_common())}
        for s, v in sorted(by_source.items())
    }
    correct = [p == t for p, t in zip(pred, truth, strict=True)]
    ece, table = _ece([s.confidence for s in scores], correct)
    result["ece"] = round(ece, 4)
    cx = [s.complexity for s in scores]
    labels = [float(r["complexity"]) for r in rows]
    errors = [abs(a - b) for a, b in zip(cx, labels, strict=True)]
    result["complexity_mae"] = round(sum(errors) / len(cx), 4)
    result["tier_mix"] = {
        t: round(sum(tier_of(c) == t for c in cx) / len(cx), 4) for t, _, _ in TIERS
    }
    result["tier_agreement"] = round(
        sum(tier_of(a) == tier_of(b) for a, b in zip(cx, labels, strict=True)) / len(cx), 4
    )
    singles = [scorer.score([t])[0] for t in texts]
    result["batch_vs_single"] = {
        "argmax_agreement": round(
            sum(a.category == b.category for a, b in zip(singles, scores, strict=True))
            / len(texts), 4),
        "tier_agreement": round(
            sum(tier_of(a.complexity) == tier_of(b.complexity)
                for a, b in zip(singles, scores, strict=True)) / len(texts), 4),
        "complexity_max_abs_diff": round(
            max(abs(a.complexity - b.complexity) for a, b in zip(singles, scores, strict=True)),
            4),
    }
    _plots(out, name, truth, pred, table)
    return result


def latency(scorer: Any, texts: list[str], repeats: int = 200) -> dict[str, float]:
    import numpy as np

    # Spread over the whole split: its rows are grouped by source, and the first source alone
    # says little (the first 100 rows, FreshQA's short questions, gave a p50 of 1.9 ms).
    step = max(1, len(texts) // repeats)
    texts = texts[::step]
    times = []
    for i in range(repeats):
        t = texts[i % len(texts)]
        start = time.perf_counter()
        scorer.score([t])
        times.append((time.perf_counter() - start) * 1000)
    arr = np.array(times[10:])
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in (50, 95, 99)}


class NothingToEvaluate(ValueError):
    """The data folder holds no split file with rows."""


def evaluate(
    model_dir: Path,
    data_dir: Path,
    out: Path,
    *,
    model_file: str = "model.onnx",
    threads: int = 1,
) -> dict[str, Any]:
    """Score ``heldout.jsonl``, ``test.jsonl`` and ``chat_eval.jsonl`` (never trained on) and
    ``val.jsonl``; write the report."""
    from classifier_onnx.scorer import Scorer
    from classifier_onnx.training.data import load_jsonl
    from classifier_onnx.training.train import example_text

    names = [f"{split}.jsonl" for split, _ in SPLITS]
    if not any((data_dir / n).is_file() and (data_dir / n).stat().st_size for n in names):
        raise NothingToEvaluate(
            f"{data_dir} holds none of {', '.join(names)} with rows: nothing to evaluate")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scorer = Scorer.load(model_dir, model_file=model_file, threads=threads)
    load_ms = (time.perf_counter() - started) * 1000
    report: dict[str, Any] = {"model": str(model_dir / model_file), "load_ms": round(load_ms, 1)}
    for split, name in SPLITS:
        path = data_dir / f"{split}.jsonl"
        if path.exists():
            rows = load_jsonl(path)
            if rows:
                report[name] = evaluate_split(scorer, rows, name, out)
    heldout = data_dir / "heldout.jsonl"
    if heldout.exists():
        texts = [example_text(r) for r in load_jsonl(heldout)]
        if texts:
            report["latency_ms_batch1"] = latency(scorer, texts)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_markdown(report))
    logger.info("report written to %s", out)
    return report


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Classifier evaluation\n\nModel: `{report['model']}` (loaded in "
             f"{report['load_ms']} ms)\n"]
    for _, name in SPLITS:
        title = TITLES[name]
        r = report.get(name)
        if not r:
            continue
        lines += [
            f"## {title}\n",
            f"rows {r['rows']}, accuracy **{r['accuracy']:.4f}**, macro-F1 "
            f"**{r['macro_f1']:.4f}**, ECE {r['ece']:.4f}, complexity MAE "
            f"{r['complexity_mae']:.4f}, tier agreement {r['tier_agreement']:.4f}\n",
            "| class | precision | recall | F1 | support |", "|---|---|---|---|---|",
        ]
        lines += [f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                  f"{m['support']} |" for c, m in r["per_class"].items()]
        lines += ["", "| source | accuracy | rows |", "|---|---|---|"]
        lines += [f"| {s} | {m['accuracy']:.3f} | {m['rows']} |"
                  for s, m in r["per_source_accuracy"].items()]
        lines += ["", f"Predicted tier mix: {r['tier_mix']}", "",
                  f"Batched (32, sorted by length) vs one at a time: {r['batch_vs_single']}", "",
                  f"![confusion](confusion_{name}.png) ![reliability](reliability_{name}.png)",
                  ""]
    if "latency_ms_batch1" in report:
        lines.append(f"Latency, batch 1, 1 thread (ms): {report['latency_ms_batch1']}\n")
    return "\n".join(lines)
