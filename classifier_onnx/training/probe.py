"""LP-FT: fit the head on the frozen encoder first, then fine-tune everything.

Kumar et al. (2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution") show that fine-tuning from a random head distorts the pretrained
features most in the first steps, while the head's gradients are large and wrong, and that
this costs accuracy out of distribution; fitting the head first on frozen features (a linear
probe) and then fine-tuning from it keeps the features closer to the pretrained ones.

Here the head is DistilBERT's own classification head (``pre_classifier`` -> ReLU ->
dropout -> ``classifier``) on the [CLS] vector; it is fitted on features computed once with
the encoder in eval mode, with the same loss as fine-tuning.
"""

from __future__ import annotations

import logging
import time
from typing import Any

logger = logging.getLogger(__name__)


def encoder_features(
    model: Any, tokenizer: Any, texts: list[str], max_tokens: int = 128, batch_size: int = 64
) -> Any:
    """The encoder's last-layer [CLS] vector for every text, in order (no dropout)."""
    from classifier_onnx.training.train import outputs_in_order

    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        out = outputs_in_order(
            lambda enc: model.distilbert(**enc).last_hidden_state[:, 0], tokenizer, texts,
            model.config.dim, max_tokens, batch_size,
        )
    finally:
        model.train(was_training)
    logger.info("encoder features for %d rows (%.0f s)", len(texts), time.perf_counter() - started)
    return out


def head_logits(model: Any, features: Any) -> Any:
    """What ``DistilBertForSequenceClassification`` computes from the [CLS] vector."""
    import torch

    hidden = torch.relu(model.pre_classifier(features))
    return model.classifier(model.dropout(hidden))


def fit_head(
    model: Any,
    features: Any,
    categories: Any,
    complexity: Any,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    complexity_weight: float = 2.0,
    seed: int = 13,
) -> list[float]:
    """Train only the head on fixed features with the fine-tuning loss; returns the mean
    loss of each epoch. Categories of ``-100`` (rows from ``learn``) teach complexity only.
    Draws from its own random stream: the caller's torch RNG is left as it was."""
    import torch
    import torch.nn.functional as F

    head = [*model.pre_classifier.parameters(), *model.classifier.parameters()]
    optimizer = torch.optim.AdamW(head, lr=lr, weight_decay=0.01)
    losses: list[float] = []
    was_training = model.training
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(features))
            total = 0.0
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                logits = head_logits(model, features[idx])
                loss = complexity_weight * F.mse_loss(
                    torch.sigmoid(logits[:, -1]), complexity[idx])
                target = categories[idx]
                if bool((target >= 0).any()):
                    loss = loss + F.cross_entropy(logits[:, :-1], target, label_smoothing=0.05,
                                                  ignore_index=-100)
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += loss.item() * len(idx)
            losses.append(total / len(features))
    model.train(was_training)
    logger.info("head fitted on frozen features: loss %.4f -> %.4f", losses[0], losses[-1])
    return losses
