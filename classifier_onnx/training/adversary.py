"""A source adversary: make the encoder forget which source a row came from, within a category.

Each training source carries cues of its own (a template, a question marker, a topic), and the
classifier learns them as category cues; a prompt from a source it never saw then falls
wherever its surface resembles some training source. Domain-adversarial training (Ganin et
al., 2016, "Domain-Adversarial Training of Neural Networks") attacks that directly: a small
head learns to tell the sources apart from the representation the classifier reads, and a
gradient-reversal layer hands the encoder the opposite of that head's gradient, so the encoder
learns features the head cannot use.

Here the sources are nested in the categories (each source has one category), so an
adversary over all sources would also erase the category itself. It is conditional instead:
for each row it chooses only among the sources of the row's own category. The encoder may keep
everything that separates categories and is pushed to drop what separates, say, BFCL's plain
one-line questions from the other agent sources.

Only training uses it: the head is not part of the checkpoint, and the exported model is a
plain text classifier as before.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class _GradReverse(torch.autograd.Function):
    """Identity forward; the gradient times ``-weight`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """``x`` unchanged; gradients flowing back through it are multiplied by ``-weight``."""
    out: torch.Tensor = _GradReverse.apply(x, weight)
    return out


def ramp(progress: float) -> float:
    """DANN's schedule from 0 to 1 (``2 / (1 + exp(-10 p)) - 1``): the adversary's pull
    starts at nothing, while the head still knows nothing, and reaches full weight by the
    middle of training."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class SourceAdversary(nn.Module):
    """A linear head over the sources, restricted per row to the sources of its category."""

    def __init__(self, dim: int, sources: list[tuple[str, str]], categories: tuple[str, ...]):
        """``sources``: ``(category, source)`` pairs seen in training."""
        super().__init__()
        names = sorted(set(sources))
        self.index = {pair: i for i, pair in enumerate(names)}
        self.head = nn.Linear(dim, len(names))
        mask = torch.full((len(categories), len(names)), float("-inf"))
        for (category, _), i in self.index.items():
            mask[categories.index(category), i] = 0.0
        self.register_buffer("mask", mask)

    def loss(
        self,
        features: torch.Tensor,
        rows: list[dict[str, Any]],
        category: torch.Tensor,
        weight: float,
    ) -> torch.Tensor:
        """The head's cross-entropy on ``features`` (reversed into the encoder by ``weight``).

        Rows without a category or a known source (``learn`` rows) and categories with a
        single source (nothing to tell apart) add nothing.
        """
        target = torch.tensor(
            [self.index.get((str(r.get("category")), str(r.get("source"))), -100) for r in rows],
            device=features.device,
        )
        keep = (target >= 0) & (category >= 0)
        if not bool(keep.any()):
            return torch.zeros((), device=features.device)
        logits = self.head(reverse_gradient(features[keep], weight))
        mask: torch.Tensor = self.mask  # type: ignore[assignment]
        logits = logits + mask[category[keep]]
        return nn.functional.cross_entropy(logits, target[keep])
