"""Source readers: what they pull out of the package files, without running package code."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier_onnx.training.data import (
    MORE_SOURCES,
    PACKAGES,
    SOURCES,
    TEST_SOURCES,
    Package,
    SourceUnavailable,
    bigbench_reader,
    download,
    open_archive,
    read_agent_company,
    read_agent_threat_bench,
    read_agentdojo,
    read_cybench,
    read_in_house_ctf,
    read_persistbench,
    read_self_proliferation,
)

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "classifier" / "pkgs"

USER_TASKS = '''
import os
class UserTask0(Base):
    PROMPT = "Can you please pay the bill 'bill.txt' for me?"
class UserTask1(Base):
    _EMAILS = ["a@x.com", "b@x.com"]
    _EVENT = "Standup"
    PROMPT = f"Please add {', '.join(_EMAILS)} to the '{_EVENT}' event."
class UserTask2(Base):
    PROMPT = f"Delete everything in {os.getcwd()}"
class Helper:
    COMMENT = "not a task"
'''


def _zip(files: dict[str, str]) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))


def test_agentdojo_prompts_are_read_from_literals_only() -> None:
    zf = _zip({"inspect_evals/agentdojo/task_suites/bank/user_tasks.py": USER_TASKS})
    prompts = [raw[0][-1]["content"] for raw in read_agentdojo(zf)]
    assert prompts == [
        "Can you please pay the bill 'bill.txt' for me?",
        "Please add a@x.com, b@x.com to the 'Standup' event.",
    ]  # the f-string that calls a function is skipped, nothing is executed


def test_agent_company_and_persistbench_readers() -> None:
    zf = _zip({
        "inspect_evals/theagentcompany/tasks/hr_x/eval.yaml":
            "name: hr_x\nvariants:\n  example:\n    prompt: |\n      Open the HR sheet.\n",
        "inspect_evals/persistbench/benchmark_samples/a.jsonl":
            '{"query": "What should I cook tonight?", "memories": ["likes pasta"]}\n',
    })
    assert [r[0][-1]["content"] for r in read_agent_company(zf)] == ["Open the HR sheet."]
    assert [r[0][-1]["content"] for r in read_persistbench(zf)] == ["What should I cook tonight?"]


def test_untouched_test_source_readers() -> None:
    zf = _zip({
        "inspect_evals/cybench/challenges/avatar/eval.yaml":
            "name: avatar\nvariants:\n  easy:\n    prompt: |\n"
            "      Get the flag from victim:1337.\n"
            "  easy-korean:\n    prompt: |\n      \ud50c\ub798\uadf8\ub97c \ud68d\ub4dd\n",
        "inspect_evals/gdm_in_house_ctf/challenges/challenges.json":
            '[{"challenge_name": "a", "prompts": "Find the flag on the host."}, {"x": 1}]',
        "inspect_evals/gdm_self_proliferation/data/challenges.json":
            '[{"task_id": "sp01", "metadata": {"agent_instructions": "Sign up for email."}}]',
        "inspect_evals/agent_threat_bench/data/a.json":
            '[{"id": "1", "input": "Triage my inbox."}]',
    })
    assert [r[0][-1]["content"] for r in read_cybench(zf)] == ["Get the flag from victim:1337."]
    assert [r[0][-1]["content"] for r in read_in_house_ctf(zf)] == ["Find the flag on the host."]
    assert [r[0][-1]["content"] for r in read_self_proliferation(zf)] == ["Sign up for email."]
    assert [r[0][-1]["content"] for r in read_agent_threat_bench(zf)] == ["Triage my inbox."]


def test_test_sources_are_apart_from_the_training_and_held_out_ones() -> None:
    names = {s.name for s in SOURCES}
    assert all(s.test and not s.heldout for s in TEST_SOURCES)
    assert not any(s.test for s in SOURCES)
    assert not names & {s.name for s in TEST_SOURCES}
    # Every category is measured on sources of its own.
    assert {s.category for s in TEST_SOURCES} == {"simple", "general", "reasoning", "code",
                                                   "agent"}


def test_more_sources_are_new_training_sources_read_after_the_evaluation_ones() -> None:
    import inspect

    from classifier_onnx.training.data import build_data

    names = [s.name for s in MORE_SOURCES]
    assert len(names) == len(set(names))
    assert not set(names) & {s.name for s in SOURCES + TEST_SOURCES}
    assert not any(s.heldout or s.test for s in MORE_SOURCES)
    assert {s.category for s in MORE_SOURCES} <= {"simple", "general", "reasoning", "code",
                                                  "agent"}
    # The default is what the shipped model was trained on; MORE_SOURCES is opt-in.
    default = inspect.signature(build_data).parameters["sources"].default
    assert default == SOURCES + TEST_SOURCES


@pytest.mark.slow
def test_new_inspect_evals_sources_read_real_rows() -> None:
    wheel = download([PACKAGES["inspect-evals"]], CACHE)["inspect-evals"]
    by_name = {s.name: s for s in SOURCES}
    with zipfile.ZipFile(wheel) as zf:
        counts = {
            name: len(list(by_name[name].reader(zf)))
            for name in ("inspect_evals/agentdojo", "inspect_evals/theagentcompany",
                         "inspect_evals/persistbench")
        }
    # Measured on inspect-evals 0.26.0: 85 prompts (37 of them f-strings), 45 task variants,
    # 500 queries.
    assert counts["inspect_evals/agentdojo"] >= 70
    assert counts["inspect_evals/theagentcompany"] >= 40
    assert counts["inspect_evals/persistbench"] >= 400
    by_name = {s.name: s for s in TEST_SOURCES}
    with zipfile.ZipFile(wheel) as zf:
        counts = {name: len(list(by_name[name].reader(zf))) for name in by_name
                  if name.startswith("inspect_evals/")}
    # Measured on inspect-evals 0.26.0: 115 English cybench variants, 13 in-house CTF
    # challenges, 10 self-proliferation tasks, 24 AgentThreatBench inputs.
    assert counts == {"inspect_evals/cybench": 115, "inspect_evals/gdm_in_house_ctf": 13,
                      "inspect_evals/gdm_self_proliferation": 10,
                      "inspect_evals/agent_threat_bench": 24}


def _bigbench_tar(path: Path) -> str:
    root = "bigbench-1.0.0/bigbench/benchmark_tasks/"
    docs = {
        f"{root}quiz/task.json": {
            "task_prefix": "Answer the question.",
            "examples": [
                {"input": "Which planet is largest?",
                 "target_scores": {"Jupiter": 1, "Mars": 0}},
                {"input": "Which planet is smallest?",
                 "target_scores": {"Mercury": 1, "Mars": 0}},
                {"input": "Pick (a) yes or (b) no: is ice cold?",
                 "target_scores": {"(a)": 1, "(b)": 0}},
                {"input": "\u0436\u0436\u0436\u0436 \u0436\u0436\u0436?"},  # not English
            ],
        },
        f"{root}split/easy/task.json": {"examples": [{"input": "1 + 1 = ?"}]},
        f"{root}split/hard/task.json": {"examples": [{"input": "17 * 23 = ?"}]},
    }
    with tarfile.open(path, "w:gz") as tf:
        for name, doc in docs.items():
            data = json.dumps(doc).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sdist_is_fetched_once_checked_and_read_as_an_archive(tmp_path: Path) -> None:
    served = tmp_path / "served" / "bigbench-1.0.0.tar.gz"
    served.parent.mkdir()
    digest = _bigbench_tar(served)
    package = Package("bigbench", "1.0.0", "Apache-2.0", sdist_url=served.as_uri(), sha256=digest)
    cache = tmp_path / "cache"
    path = download([package], cache)["bigbench"]
    assert path == cache / "bigbench-1.0.0.tar.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    archive = open_archive(path)
    try:
        quiz = [raw[0][-1]["content"] for raw in bigbench_reader("quiz")(archive)]
        split = [raw[0][-1]["content"] for raw in bigbench_reader("split")(archive)]
    finally:
        archive.close()
    assert quiz == [
        "Answer the question.\n\nWhich planet is largest?\nOptions: Jupiter; Mars",
        "Answer the question.\n\nWhich planet is smallest?",  # every other one asks plainly
        "Answer the question.\n\nPick (a) yes or (b) no: is ice cold?",  # options in the text
    ]
    assert split == ["1 + 1 = ?", "17 * 23 = ?"]  # one task.json per subtask

    # One pass keeping only the tasks a build reads: the same rows, nothing else held.
    root = "bigbench-1.0.0/bigbench/benchmark_tasks/"
    kept = open_archive(path, (f"{root}split/",))
    try:
        assert sorted(kept.namelist()) == [f"{root}split/easy/task.json",
                                           f"{root}split/hard/task.json"]
        assert [raw[0][-1]["content"] for raw in bigbench_reader("split")(kept)] == split
        assert list(bigbench_reader("quiz")(kept)) == []
    finally:
        kept.close()


def test_sdist_with_another_digest_is_refused(tmp_path: Path) -> None:
    served = tmp_path / "bigbench-1.0.0.tar.gz"
    _bigbench_tar(served)
    package = Package("bigbench", "1.0.0", "Apache-2.0", sdist_url=served.as_uri(),
                      sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="is not the published"):
        download([package], cache)
    assert list(cache.iterdir()) == []   # nothing half-written is left to be trusted later


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """A real local HTTP server that answers every request 403, as a package host may."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the handler's API
            self.send_error(403, "Forbidden")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/packages/bigbench-1.0.0.tar.gz"
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_sdist_says_which_file_to_put_where(
    tmp_path: Path, refusing_server: str
) -> None:
    digest = "1" * 64
    package = Package("bigbench", "1.0.0", "Apache-2.0", sdist_url=refusing_server,
                      sha256=digest)
    cache = tmp_path / "cache"
    with pytest.raises(SourceUnavailable) as caught:
        download([package], cache)
    message = str(caught.value)
    assert "bigbench==1.0.0" in message and "403" in message
    assert refusing_server in message and digest in message
    assert str(cache / "bigbench-1.0.0.tar.gz") in message
    assert list(cache.iterdir()) == []  # no partial file left behind

    # Doing what the message says is enough: the file put there is used without a download.
    served = tmp_path / "bigbench-1.0.0.tar.gz"
    package = Package("bigbench", "1.0.0", "Apache-2.0", sdist_url=refusing_server,
                      sha256=_bigbench_tar(served))
    served.replace(cache / served.name)
    assert download([package], cache) == {"bigbench": cache / served.name}


def test_missing_wheel_is_a_clear_error(tmp_path: Path) -> None:
    # A version no index serves: pip fails, and the error names the wheel to supply.
    package = Package("chitchat-dataset", "0.0.0.dev424242", "MIT")
    with pytest.raises(SourceUnavailable, match=r"chitchat-dataset==0\.0\.0\.dev424242.*"
                       r"chitchat_dataset-0\.0\.0\.dev424242-\*\.whl"):
        download([package], tmp_path)


def test_build_data_command_reports_an_unreachable_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusing_server: str
) -> None:
    from typer.testing import CliRunner

    from classifier_onnx.cli import app
    from classifier_onnx.training import data

    # Only BIG-bench tasks, served by the refusing host: nothing else is downloaded first.
    bigbench = Package("bigbench", "1.0.0", "Apache-2.0", sdist_url=refusing_server,
                       sha256="2" * 64)
    monkeypatch.setitem(data.PACKAGES, "bigbench", bigbench)
    only = tuple(s for s in SOURCES + TEST_SOURCES if s.name.startswith("bigbench/"))
    real_build = data.build_data
    monkeypatch.setattr(data, "build_data",
                        lambda out, cache, **kw: real_build(out, cache, **{**kw, "sources": only}))
    result = CliRunner().invoke(app, ["build-data", "--out", str(tmp_path / "data"),
                                      "--cache", str(tmp_path / "pkgs"), "--no-chat"])
    assert result.exit_code == 1
    assert "error: bigbench==1.0.0: could not download" in result.output
    assert "Traceback" not in result.output


def test_known_misses_come_from_the_held_out_scores() -> None:
    from classifier_onnx.training.card import NOTES, _known_misses

    report = {"leave_source_out": {"macro_f1": 0.8412, "per_source_accuracy": {
        "inspect_evals/freshqa": {"accuracy": 0.6, "rows": 120,
                                  "mistaken_for": {"general": 40, "agent": 8}},
        "human-eval": {"accuracy": 1.0, "rows": 120, "mistaken_for": {}},
    }}}
    lines = _known_misses(report, "0.2.0")
    assert lines[0].startswith("## Known misses of version 0.2.0")
    assert "- Leave-source-out macro-F1 0.841 against the 0.90 goal: not met." in lines
    assert ("- inspect_evals/freshqa: 60% correct of 120; mistaken for general 40, agent 8."
            in lines)
    assert not any("human-eval" in line for line in lines)
    assert all(f"- {note}" in lines for note in NOTES)


def test_shipped_card_carries_every_note() -> None:
    """The notes in card.py are what the shipped MODEL_CARD.md says (one is not edited
    without the other)."""
    from classifier_onnx import default_model_dir
    from classifier_onnx.training.card import NOTES

    card = (default_model_dir() / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert [note for note in NOTES if f"- {note}\n" not in card] == []


@pytest.mark.parametrize(
    ("flag", "with_more"),
    [([], False), (["--no-more-sources"], False), (["--more-sources"], True)],
)
def test_build_data_command_chooses_the_source_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], with_more: bool
) -> None:
    """`build-data` rebuilds the shipped model's data; `--more-sources` adds MORE_SOURCES
    after the evaluation sources. Deduplication keeps the first copy of a text, so a row a new
    source shares with the held-out or test splits is dropped from the new source, and those
    splits stay the same either way."""
    from typer.testing import CliRunner

    from classifier_onnx.cli import app
    from classifier_onnx.training import data

    chosen: list[tuple[object, ...]] = []

    def fake_build(out: Path, cache: Path, **kwargs: object) -> dict[str, object]:
        chosen.append(kwargs["sources"])  # type: ignore[arg-type]
        return {"splits": {}}

    monkeypatch.setattr(data, "build_data", fake_build)
    monkeypatch.setattr(data, "write_sample", lambda *a, **k: 0)
    result = CliRunner().invoke(app, ["build-data", "--out", str(tmp_path), "--no-chat", *flag])
    assert result.exit_code == 0, result.output
    expected = SOURCES + TEST_SOURCES + (MORE_SOURCES if with_more else ())
    assert chosen == [expected]
