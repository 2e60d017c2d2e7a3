"""The runtime Scorer on the shipped int8 model."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from classifier_onnx import CATEGORIES, ModelNotFound, Score, Scorer, render_request
from classifier_onnx.scorer import _chunks_by_length

# The routing examples the mission names, phrased as a user would send them.
MISSION = [
    ("simple", [{"role": "user", "content": "What are your store hours on Sunday?"}], 0),
    ("general", [{"role": "user", "content":
                  "Hi, I was charged twice for order #12345. Can you help me get a refund?"}], 0),
    ("code", [{"role": "user", "content":
               "Bug: uploading a file with a UTF-8 filename through our multipart/form-data "
               "endpoint fails. The filename gets mangled to '???.pdf' and the server returns "
               "400. Expected the original name to be preserved."}], 0),
    ("agent", [{"role": "user", "content":
                "Look up the order data for customer 8812 via the orders API and tell me "
                "which shipments are delayed."}], 3),
]


def _texts() -> list[str]:
    return [render_request(messages, tools=tools) for _, messages, tools in MISSION]


@pytest.mark.parametrize(
    "index", range(len(MISSION)), ids=[category for category, _, _ in MISSION]
)
def test_mission_examples_get_their_category(scorer: Scorer, index: int) -> None:
    category, messages, tools = MISSION[index]
    [score] = scorer.score([render_request(messages, tools=tools)])
    assert score.category == category


def test_bug_report_with_code_is_code(scorer: Scorer) -> None:
    text = (
        "Fix this bug: multipart uploads with UTF-8 filenames fail.\n\n```python\n"
        "filename = part.headers['Content-Disposition'].split('filename=')[1].encode('ascii')"
        "\n```"
    )
    assert scorer.score([text])[0].category == "code"


def test_simple_scores_lower_than_agent(scorer: Scorer) -> None:
    simple, _, _, agent = scorer.score(_texts())
    assert simple.complexity < 0.3
    assert agent.complexity > simple.complexity


def test_score_fields(scorer: Scorer) -> None:
    [score] = scorer.score(["hello there, how are you?"])
    assert isinstance(score, Score)
    assert 0.0 <= score.complexity <= 1.0
    assert set(score.probabilities) == set(CATEGORIES)
    assert sum(score.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert score.confidence == max(score.probabilities.values())
    assert score.category == max(score.probabilities, key=score.probabilities.__getitem__)
    assert 0 < score.tokens <= scorer.max_tokens
    assert not score.truncated


def test_batch_equals_single(scorer: Scorer) -> None:
    texts = _texts() + ["ok thanks", "Write a haiku about the sea. " * 12]
    singles = [scorer.score([t])[0] for t in texts]
    batched = scorer.score(texts)
    _assert_close(singles, batched)


def _assert_close(singles: list[Score], batched: list[Score]) -> None:
    # Dynamic int8 quantisation picks activation scales per batch tensor (padding included),
    # so a text scored in a batch moves against the same text scored alone (the fp32 graph
    # gives identical rows). Measured: logits move by up to ~0.5 in long, padded batches;
    # here one probability of a borderline text (the repeated haiku) moved by 0.164 with the
    # shipped model 0.2.0 and by 0.236 with 0.3.0 (reasoning at confidence 0.62 alone, 0.38
    # in the batch). Over the held-out sources 0.2.0 agrees batched against single on 98.2 %
    # of argmaxes (0.3.0: 99.3 %), see the card.
    for one, many in zip(singles, batched, strict=True):
        assert one.tokens == many.tokens
        assert one.complexity == pytest.approx(many.complexity, abs=0.15)
        for c in CATEGORIES:
            assert one.probabilities[c] == pytest.approx(many.probabilities[c], abs=0.3)
        if one.confidence > 0.8:
            assert one.category == many.category


def test_large_batches_are_sorted_and_come_back_in_order(scorer: Scorer) -> None:
    base = [render_request(m, tools=t) for _, m, t in MISSION] + [
        "What is the capital of Australia?",
        "Write a SQL query that returns the ten most recent orders per customer.",
    ]
    # Texts of many lengths, longest first, more than one batch (batch_size 32).
    texts = [" ".join([t] * (1 + i % 5)) for i, t in enumerate(base * 7)][::-1]
    assert len(texts) > scorer.batch_size
    batched = scorer.score(texts)
    singles = [scorer.score([t])[0] for t in texts]
    _assert_close(singles, batched)


@pytest.mark.parametrize(
    ("lengths", "batch_size", "chunks"),
    [
        ([], 32, []),
        ([7], 32, [[0]]),
        # Short and long texts are not padded to each other, and come back sorted by length.
        ([5, 120, 6, 118, 7], 32, [[0, 2, 4], [3, 1]]),
        # Equal lengths fill batches up to batch_size.
        ([10] * 5, 2, [[0, 1], [2, 3], [4]]),
        # A slowly growing length stays in one run while padding stays under 25 %, and
        # a few padding tokens never cost a run of their own.
        ([100, 110, 120, 130], 32, [[0, 1, 2, 3]]),
        ([3, 4, 8], 32, [[0, 1, 2]]),
        ([10, 10, 10, 40], 32, [[0, 1, 2], [3]]),
    ],
)
def test_chunks_by_length(lengths: list[int], batch_size: int, chunks: list[list[int]]) -> None:
    got = _chunks_by_length(lengths, batch_size)
    assert got == chunks
    assert sorted(i for chunk in got for i in chunk) == list(range(len(lengths)))
    for chunk in got:
        width = max(lengths[i] for i in chunk)
        real = sum(lengths[i] for i in chunk)
        assert len(chunk) <= batch_size
        assert len(chunk) == 1 or width * len(chunk) - real <= max(0.25 * real, 64)


def test_small_batches_of_mixed_lengths_run_in_length_chunks(
    scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router batch (fewer than batch_size texts) of short and long texts is not padded to
    its longest text: padding is compute on CPU."""
    widths: list[tuple[int, int]] = []
    run = scorer._run

    def recording(batch):  # type: ignore[no-untyped-def]
        widths.append((len(batch), max(len(e.ids) for e in batch)))
        return run(batch)

    monkeypatch.setattr(scorer, "_run", recording)
    texts = ["hi", "What are your store hours?", "ok thanks"] + [
        "Write a function that parses an RFC 5322 address list, with tests. " * 8
    ]
    scores = scorer.score(texts)
    assert len(widths) == 2  # the three short texts, then the long one alone
    assert widths[0][0] == 3 and widths[0][1] < 16
    assert widths[1] == (1, scores[3].tokens)


def test_50kb_input_is_cut_and_truncated(scorer: Scorer) -> None:
    text = "Please review this log and tell me what failed.\n" + (
        "2024-05-01 12:00:01 ERROR worker-3 connection reset by peer while reading body\n" * 640
    )
    assert len(text) > 50_000
    started = time.perf_counter()
    [score] = scorer.score([text])
    print(f"50 KB input scored in {(time.perf_counter() - started) * 1000:.1f} ms")
    assert score.truncated
    assert score.tokens == scorer.max_tokens
    # Rendering cuts before tokenising too.
    [rendered] = scorer.score([render_request([{"role": "user", "content": text}])])
    assert rendered.tokens == scorer.max_tokens


def test_thread_safe(scorer: Scorer) -> None:
    texts = _texts() * 8
    expected = scorer.logits([t for t in texts[:4]])
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: scorer.logits([t])[0], texts))
    singles = np.stack([scorer.logits([t])[0] for t in texts[:4]])
    for i, row in enumerate(results):
        np.testing.assert_allclose(row, singles[i % 4], atol=1e-5)
    assert expected.shape == (4, len(CATEGORIES) + 1)


def test_empty_and_wrong_input(scorer: Scorer) -> None:
    assert scorer.score([]) == []
    with pytest.raises(TypeError):
        scorer.score("one string")  # type: ignore[arg-type]


def test_missing_model_dir(tmp_path: object) -> None:
    with pytest.raises(ModelNotFound):
        Scorer.load(str(tmp_path))


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, classifier_onnx, classifier_onnx.cli; "
        "bad = [m for m in ('torch', 'transformers', 'optimum', 'sklearn') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_spin_off_sets_the_session_option_and_scores_the_same(scorer: Scorer) -> None:
    calm = Scorer.load(threads=2, spin=False)
    options = calm._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2
    texts = _texts()
    got, want = calm.logits(texts), scorer.logits(texts)
    np.testing.assert_allclose(got, want, atol=1e-4)
    spinning = Scorer.load(threads=2)._session.get_session_options()
    try:
        entry: str | None = spinning.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # onnxruntime raises for a key never set: its default, spinning
        entry = None
    assert entry != "0"


def test_router_settings_reach_the_session() -> None:
    from schemas.settings import ClassifierSettings
    from streams.scorer import load_scorer

    loaded = load_scorer(ClassifierSettings(threads=2, spin=False, max_tokens=64))
    assert isinstance(loaded, Scorer)
    options = loaded._session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert loaded.max_tokens == 64
