"""FFN pruning: the kept neurons compute exactly what they computed before, the most
important ones are kept, and a pruned checkpoint trains, saves, exports and scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.train

TEXTS = ["What are your store hours on Sunday?", "I was charged twice for order #12345.",
         "Multipart upload breaks on UTF-8 filenames in the Python client.",
         "Look up the order data via the orders API and refund the second charge."]


def _logits(model: Any, tokenizer: Any, texts: list[str] = TEXTS) -> Any:
    """The encoder's last hidden states (the head's logits are tiny at random init)."""
    import torch

    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.distilbert(**enc).last_hidden_state


def test_keeping_every_neuron_changes_nothing(tiny_model: tuple[Any, Any]) -> None:
    import torch

    from classifier_onnx.training.prune import ffn_importance, prune_ffn

    model, tokenizer = tiny_model
    before = _logits(model, tokenizer)
    kept = prune_ffn(model, 64, ffn_importance(model, tokenizer, TEXTS))
    assert kept == [list(range(64))] * 2
    assert torch.equal(_logits(model, tokenizer), before)


def test_pruned_model_equals_the_full_one_without_the_dropped_neurons(
    tiny_model: tuple[Any, Any], tmp_path: Path
) -> None:
    """Pruning to 24 neurons gives the logits of the unpruned model whose other 40 neurons
    write nothing (their output columns zeroed); and it survives a save and a reload."""
    import copy

    import torch
    from transformers import DistilBertForSequenceClassification

    from classifier_onnx.training.prune import ffn_importance, prune_ffn

    model, tokenizer = tiny_model
    masked = copy.deepcopy(model)
    full = _logits(model, tokenizer)
    kept = prune_ffn(model, 24, ffn_importance(model, tokenizer, TEXTS))
    assert model.config.hidden_dim == 24
    with torch.no_grad():
        for layer, index in zip(masked.distilbert.transformer.layer, kept, strict=True):
            dropped = sorted(set(range(64)) - set(index))
            layer.ffn.lin2.weight[:, dropped] = 0.0
    pruned = _logits(model, tokenizer)
    assert torch.allclose(pruned, _logits(masked, tokenizer), atol=1e-5)
    assert float((pruned - full).abs().max()) > 1e-2  # the 40 dropped neurons did matter
    model.save_pretrained(tmp_path)
    reloaded = DistilBertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert reloaded.distilbert.transformer.layer[0].ffn.lin1.out_features == 24
    assert torch.equal(_logits(reloaded, tokenizer), pruned)


def test_the_neurons_that_move_the_output_are_kept(tiny_model: tuple[Any, Any]) -> None:
    """A neuron whose output column is zero moves nothing and goes first; a neuron whose
    output column is scaled up is kept; the scores are per layer and per neuron."""
    import torch

    from classifier_onnx.training.prune import ffn_importance, prune_ffn

    model, tokenizer = tiny_model
    layer = model.distilbert.transformer.layer[1]
    with torch.no_grad():
        layer.ffn.lin2.weight[:, 5] = 0.0
        layer.ffn.lin2.weight[:, 9] *= 1000.0
    scores = ffn_importance(model, tokenizer, TEXTS, batch_size=3)
    assert [s.shape[0] for s in scores] == [64, 64]
    assert scores[1][5] == 0.0
    assert int(scores[1].argmax()) == 9
    kept = prune_ffn(model, 63, scores)
    assert 5 not in kept[1] and 9 in kept[1]
    with pytest.raises(ValueError, match="keep must be"):
        prune_ffn(model, 0, scores)


def test_importance_ignores_padding(tiny_model: tuple[Any, Any]) -> None:
    """Scores count real tokens only: a short text batched beside a long one scores as it
    does alone, once the token counts are weighed back in."""
    import torch

    from classifier_onnx.training.prune import ffn_importance

    model, tokenizer = tiny_model
    short, long = TEXTS[0], TEXTS[3] * 3
    n_short = len(tokenizer(short)["input_ids"])
    n_long = len(tokenizer(long)["input_ids"])
    together = ffn_importance(model, tokenizer, [short, long], batch_size=2)
    apart = [
        (a * n_short + b * n_long) / (n_short + n_long)
        for a, b in zip(ffn_importance(model, tokenizer, [short]),
                        ffn_importance(model, tokenizer, [long]), strict=True)
    ]
    for x, y in zip(together, apart, strict=True):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_a_pruned_model_trains_exports_and_scores(tmp_path: Path, tiny_dataset: Path) -> None:
    pytest.importorskip("optimum")
    from classifier_onnx import Scorer
    from classifier_onnx.training.data import load_jsonl
    from classifier_onnx.training.export import export
    from classifier_onnx.training.train import train

    data = tiny_dataset
    summary = train(data, tmp_path / "ckpt", epochs=1, max_steps=1, batch_size=4,
                    max_tokens=16, limit=8, layers=2, ffn_dim=96)
    assert summary["ffn_dim"] == 96 and summary["layers"] == 2
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["hidden_dim"] == 96
    export(tmp_path / "ckpt", tmp_path / "model", tmp_path / "onnx", max_tokens=16,
           check_rows=load_jsonl(data / "heldout.jsonl"),
           calibration_rows=load_jsonl(data / "val.jsonl"))
    scores = Scorer.load(tmp_path / "model", max_tokens=16).score(TEXTS)
    assert len(scores) == 4 and all(0.0 <= s.complexity <= 1.0 for s in scores)
