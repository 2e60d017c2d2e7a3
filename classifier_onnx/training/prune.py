"""Structured pruning of the feed-forward blocks: fewer FFN neurons, less arithmetic.

Of the multiply-adds of one layer at 128 tokens, the two FFN matrices (384 x 1536 each) take
about 60 %, the four attention projections 30 % and the attention products the rest. The
int8 matrix products are most of the scoring time (the card's profile), so a narrower FFN is
the most direct way to a faster model that keeps all six layers.

The pruning is done on the base encoder before fine-tuning (fine-tuning then recovers what
the dropped neurons carried). Each layer keeps the ``keep`` intermediate neurons with the
largest importance, ``E|activation_j| * ||lin2[:, j]||``: how much the neuron, on real
training texts, moves the layer's output. Every layer keeps the same number, so the model
stays a plain ``DistilBertConfig`` (``hidden_dim = keep``) that ``from_pretrained``, optimum
and the runtime load unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def ffn_importance(
    model: Any, tokenizer: Any, texts: list[str], max_tokens: int = 128, batch_size: int = 32
) -> list[Any]:
    """Per layer, one importance per FFN neuron: mean |activation| over the real (non-pad)
    tokens of ``texts``, times the norm of the neuron's output column."""
    import torch

    layers = _layers(model)
    sums = [torch.zeros(layer.ffn.lin1.out_features) for layer in layers]
    count = 0
    mask_now: list[Any] = [None]

    def hook(index: int) -> Any:
        def record(_module: Any, _inputs: Any, output: Any) -> None:
            mask = mask_now[0].unsqueeze(-1).to(output.dtype)
            sums[index] += (output.abs() * mask).sum(dim=(0, 1))

        return record

    handles = [layer.ffn.activation.register_forward_hook(hook(i))
               for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(texts[start : start + batch_size], truncation=True,
                                max_length=max_tokens, padding=True, return_tensors="pt")
                mask_now[0] = enc["attention_mask"]
                count += int(enc["attention_mask"].sum())
                model(**enc)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [
        (total / max(1, count)) * layer.ffn.lin2.weight.norm(dim=0)
        for total, layer in zip(sums, layers, strict=True)
    ]


def prune_ffn(model: Any, keep: int, importance: list[Any]) -> list[list[int]]:
    """Keep the ``keep`` most important FFN neurons of every layer, in their original order;
    returns the kept indices per layer. The model's ``config.hidden_dim`` becomes ``keep``."""
    import torch

    layers = _layers(model)
    width = layers[0].ffn.lin1.out_features
    if not 0 < keep <= width:
        raise ValueError(f"keep must be in 1..{width}, got {keep}")
    kept: list[list[int]] = []
    for layer, scores in zip(layers, importance, strict=True):
        index = torch.sort(torch.topk(scores, keep).indices).values
        lin1, lin2 = layer.ffn.lin1, layer.ffn.lin2
        new1 = torch.nn.Linear(lin1.in_features, keep)
        new2 = torch.nn.Linear(keep, lin2.out_features)
        with torch.no_grad():
            new1.weight.copy_(lin1.weight[index])
            new1.bias.copy_(lin1.bias[index])
            new2.weight.copy_(lin2.weight[:, index])
            new2.bias.copy_(lin2.bias)
        layer.ffn.lin1, layer.ffn.lin2 = new1, new2
        kept.append(index.tolist())
    model.config.hidden_dim = keep
    logger.info("FFN pruned to %d of %d neurons in %d layers", keep, width, len(layers))
    return kept


def _layers(model: Any) -> list[Any]:
    encoder = getattr(model, "distilbert", model)
    return list(encoder.transformer.layer)
