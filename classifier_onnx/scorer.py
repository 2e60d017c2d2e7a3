"""The ONNX scoring session: a fast tokenizer plus an onnxruntime session, no torch.

>>> scorer = Scorer.load()                       # the shipped int8 model
>>> [score] = scorer.score(["What are your store hours on Sunday?"])
>>> score.category, round(score.complexity, 2)   # doctest: +SKIP
('simple', 0.08)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from classifier_onnx.features import CATEGORIES

__all__ = ["ClassifierError", "ModelNotFound", "Score", "Scorer", "default_model_dir"]

logger = logging.getLogger(__name__)

# The key in config.json of the complexity calibration (classifier_onnx.training.calibrate).
CALIBRATION_KEY = "complexity_calibration"


class ClassifierError(Exception):
    """Base of the classifier's errors.

    ClassifierError
     └── ModelNotFound     the model directory lacks a file the runtime needs (not retriable)
    """

    retriable = False


class ModelNotFound(ClassifierError):
    """The model directory or one of its files is missing."""


def default_model_dir() -> Path:
    """The directory of the model shipped inside this package."""
    return Path(__file__).resolve().parent / "model"


@dataclass(frozen=True, slots=True)
class Score:
    """One request's score.

    ``complexity`` in [0, 1] is what the tier thresholds read; ``category`` is the most likely
    of ``CATEGORIES``; ``probabilities`` maps every category to its probability and
    ``confidence`` is the largest of them. ``tokens`` is how many tokens the model read and
    ``truncated`` whether the input was longer than that.
    """

    complexity: float
    category: str
    probabilities: dict[str, float]
    confidence: float
    tokens: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class _Encoded:
    ids: list[int]
    truncated: bool


# A chunk is cut where padding would cost more than this share of real tokens: the model is
# compute-bound on CPU (throughput is flat across batch sizes), so a padded token costs as
# much as a real one while one run more costs little.
_PADDING_SLACK = 0.25
# ... and a little padding is always cheaper than another run (~0.3 ms of fixed cost).
_PADDING_FLOOR = 64


def _chunks_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` sorted by length, cut into runs of at most ``batch_size`` where
    padding every row to the run's longest adds at most ``_PADDING_SLACK`` of the real tokens
    (or ``_PADDING_FLOOR`` tokens, whichever is more).

    >>> _chunks_by_length([5, 120, 6, 118, 7], 32)
    [[0, 2, 4], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks: list[list[int]] = []
    chunk: list[int] = []
    real = 0
    for i in order:
        n = lengths[i]
        padding = n * (len(chunk) + 1) - (real + n)
        if chunk and (
            len(chunk) >= batch_size
            or padding > max(_PADDING_SLACK * (real + n), _PADDING_FLOOR)
        ):
            chunks.append(chunk)
            chunk, real = [], 0
        chunk.append(i)
        real += n
    if chunk:
        chunks.append(chunk)
    return chunks


def _softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    out: npt.NDArray[np.float32] = exp / exp.sum(axis=-1, keepdims=True)
    return out


class Scorer:
    """Score request texts with the classifier; safe to share between threads.

    Inputs are cut to ``max_chars`` characters before tokenising, truncated to ``max_tokens``
    tokens, sorted by length and run in chunks of at most ``batch_size`` texts of similar
    length, each padded to its longest (not to ``max_tokens``), so that short texts are not
    padded to long ones. Results come back in input order.

    >>> scorer = Scorer.load(threads=1)
    >>> scores = scorer.score([render_request(messages)])  # doctest: +SKIP
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        config: dict[str, Any],
        *,
        max_tokens: int,
        max_chars: int,
        batch_size: int,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.config = config
        self.labels: tuple[str, ...] = tuple(config.get("labels", CATEGORIES))
        self.complexity_index = int(config.get("complexity_index", len(self.labels)))
        self.max_tokens = max_tokens
        self.max_chars = max_chars
        self.batch_size = batch_size
        self._pad_id = int(config.get("pad_token_id", 0))
        self._input_names = {i.name for i in session.get_inputs()}
        # A monotone map from the raw sigmoid onto the label scale (see
        # classifier_onnx.training.calibrate); absent: the raw score is used.
        calibration = config.get(CALIBRATION_KEY) or {}
        self._calibration: tuple[np.ndarray, np.ndarray] | None = (
            (np.asarray(calibration["x"], dtype=np.float64),
             np.asarray(calibration["y"], dtype=np.float64))
            if calibration.get("x") else None
        )

    @classmethod
    def load(
        cls,
        model_dir: str | Path | None = None,
        *,
        threads: int = 1,
        spin: bool = True,
        max_tokens: int = 128,
        max_chars: int = 2000,
        batch_size: int = 32,
        model_file: str = "model.onnx",
        calibrated: bool = True,
    ) -> Scorer:
        """Load ``model_file`` and ``tokenizer.json`` from ``model_dir`` (default: shipped).

        ``threads`` is onnxruntime's intra-op thread count. One thread is the default: on a
        machine where other processes use the other cores, two threads were 2-4x slower.
        ``calibrated=False`` ignores the complexity calibration in ``config.json`` (the raw
        sigmoid, which is what a calibration is fitted on).
        ``spin=False`` stops onnxruntime's intra-op threads from spin-waiting for work
        between operators (its default spins): with ``threads`` > 1 on a machine whose cores
        other processes also use (a broker beside the router), spinning threads take those
        cores from the others.
        """
        started = time.perf_counter()
        directory = Path(model_dir) if model_dir is not None else default_model_dir()
        model_path = directory / model_file
        tokenizer_path = directory / "tokenizer.json"
        for path in (model_path, tokenizer_path):
            if not path.is_file():
                raise ModelNotFound(f"classifier model file missing: {path}")
        config_path = directory / "config.json"
        config: dict[str, Any] = (
            json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        )
        if not calibrated:
            config.pop(CALIBRATION_KEY, None)

        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_tokens)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        scorer = cls(
            session,
            tokenizer,
            config,
            max_tokens=max_tokens,
            max_chars=max_chars,
            batch_size=batch_size,
        )
        logger.info(
            "classifier loaded from %s in %.0f ms (threads=%d, max_tokens=%d)",
            directory,
            (time.perf_counter() - started) * 1000,
            threads,
            max_tokens,
        )
        return scorer

    def _encode(self, texts: Sequence[str]) -> list[_Encoded]:
        cut = [t[: self.max_chars] for t in texts]
        encodings = self._tokenizer.encode_batch(cut)
        return [
            _Encoded(
                ids=list(e.ids),
                truncated=bool(e.overflowing) or len(t) < len(texts[i]),
            )
            for i, (e, t) in enumerate(zip(encodings, cut, strict=True))
        ]

    def _run(self, batch: Sequence[_Encoded]) -> npt.NDArray[np.float32]:
        width = max(len(e.ids) for e in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, encoded in enumerate(batch):
            ids[row, : len(encoded.ids)] = encoded.ids
            mask[row, : len(encoded.ids)] = 1
        feeds: dict[str, npt.NDArray[np.int64]] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        logits = self._session.run(None, feeds)[0]
        return np.asarray(logits, dtype=np.float32)

    def logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Raw model outputs, one row per text, in input order."""
        if not texts:
            return np.zeros((0, self.complexity_index + 1), dtype=np.float32)
        return self._logits(self._encode(texts))

    def _logits(self, encoded: Sequence[_Encoded]) -> npt.NDArray[np.float32]:
        rows: list[npt.NDArray[np.float32]] = [np.empty(0, dtype=np.float32)] * len(encoded)
        for chunk in _chunks_by_length([len(e.ids) for e in encoded], self.batch_size):
            out = self._run([encoded[i] for i in chunk])
            for i, row in zip(chunk, out, strict=True):
                rows[i] = row
        return np.stack(rows)

    def score(self, texts: Sequence[str]) -> list[Score]:
        """Score ``texts`` (rendered with ``render_request``); results in input order."""
        if isinstance(texts, str):
            raise TypeError("score() takes a sequence of texts, not one string")
        if not texts:
            return []
        encoded = self._encode(texts)
        logits = self._logits(encoded)
        n = len(self.labels)
        probs = _softmax(logits[:, :n])
        complexity = 1.0 / (1.0 + np.exp(-logits[:, self.complexity_index]))
        if self._calibration is not None:
            complexity = np.interp(complexity, *self._calibration)
        scores: list[Score] = []
        for row, enc in enumerate(encoded):
            p = probs[row]
            best = int(p.argmax())
            scores.append(
                Score(
                    complexity=float(complexity[row]),
                    category=self.labels[best],
                    probabilities={label: float(p[j]) for j, label in enumerate(self.labels)},
                    confidence=float(p[best]),
                    tokens=len(enc.ids),
                    truncated=enc.truncated,
                )
            )
        return scores

    def score_one(self, text: str) -> Score:
        """Score a single text."""
        return self.score([text])[0]
