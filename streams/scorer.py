"""The classifier as the scoring agent sees it: a small protocol, and the real one's loader.

Tests inject any object with ``score(texts) -> list[ScoreLike]``; production loads the
ONNX scorer from ``classifier_onnx`` (imported only when it is loaded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from schemas.messages import RouteRequest
from schemas.settings import ClassifierSettings
from streams.policy import ScoreLike

__all__ = ["ScorerProtocol", "load_scorer", "render"]


class ScorerProtocol(Protocol):
    """Scores a batch of rendered requests; must be safe to call from a worker thread."""

    def score(self, texts: Sequence[str]) -> Sequence[ScoreLike]: ...


def load_scorer(settings: ClassifierSettings) -> ScorerProtocol:
    """The ONNX classifier (``classifier_onnx.Scorer``) configured by ``settings``."""
    from classifier_onnx import Scorer

    scorer: ScorerProtocol = Scorer.load(
        settings.model_dir,
        threads=settings.threads,
        spin=settings.spin,
        max_tokens=settings.max_tokens,
        max_chars=settings.max_chars,
    )
    return scorer


def render(request: RouteRequest, *, turn: int) -> str:
    """The classifier's input text for ``request`` (the classifier's own renderer)."""
    from classifier_onnx import render_request

    messages: list[Mapping[str, Any]] = [
        {"role": m.role, "content": m.content} for m in request.messages
    ]
    return render_request(messages, tools=len(request.tools), turn=turn)
