"""Fixtures for the classifier tests: one shared Scorer on the shipped model."""

from __future__ import annotations

import time

import pytest

from classifier_onnx import Scorer, default_model_dir


@pytest.fixture(scope="session")
def scorer() -> Scorer:
    if not (default_model_dir() / "model.onnx").is_file():
        pytest.fail("the shipped model is missing: run `llm-router classifier export`")
    started = time.perf_counter()
    loaded = Scorer.load(threads=1)
    print(f"\nScorer.load: {(time.perf_counter() - started) * 1000:.0f} ms")
    return loaded
