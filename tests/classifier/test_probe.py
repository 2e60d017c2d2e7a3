"""LP-FT: features are the model's own [CLS] vectors, the head computes what the model
computes, and fitting the head moves the head alone and leaves the caller's RNG alone."""

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
         "Look up the order data via the orders API and refund the second charge.",
         "hi", "How many primes are there below 100? Show your reasoning step by step."]


def test_features_and_head_reproduce_the_model(tiny_model: tuple[Any, Any]) -> None:
    import torch

    from classifier_onnx.training.probe import encoder_features, head_logits

    model, tokenizer = tiny_model
    features = encoder_features(model, tokenizer, TEXTS, batch_size=4)
    assert features.shape == (len(TEXTS), 32)
    with torch.no_grad():
        for text, row in zip(TEXTS, features, strict=True):
            enc = tokenizer([text], return_tensors="pt")
            alone = model.distilbert(**enc).last_hidden_state[0, 0]
            assert torch.allclose(row, alone, atol=1e-5)  # padding in a batch changes nothing
        enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
        assert torch.allclose(head_logits(model, features), model(**enc).logits, atol=1e-5)
    assert not model.training  # left in the mode it was in


def test_fitting_the_head_moves_the_head_alone(tiny_model: tuple[Any, Any]) -> None:
    import torch

    from classifier_onnx.training.probe import fit_head, head_logits

    model, _ = tiny_model
    torch.manual_seed(1)
    features = torch.randn(6, 32)  # a random tiny encoder's [CLS] vectors are near-identical
    categories = torch.tensor([0, 1, 3, 4, -100, 2])  # one row from `learn`: no category
    complexity = torch.tensor([0.1, 0.2, 0.5, 0.6, 0.05, 0.7])
    encoder = {k: v.clone() for k, v in model.distilbert.state_dict().items()}
    head = model.classifier.weight.clone()
    rng = torch.get_rng_state()
    losses = fit_head(model, features, categories, complexity, epochs=300, batch_size=8,
                      lr=1e-2, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, model.distilbert.state_dict()[k]) for k, v in encoder.items())
    assert not torch.equal(model.classifier.weight, head)
    assert len(losses) == 300 and losses[-1] < losses[0] / 2
    model.eval()
    with torch.no_grad():
        logits = head_logits(model, features)
    labelled = categories >= 0
    assert torch.equal(logits[labelled, :5].argmax(-1), categories[labelled])
    again = fit_head(model, features, categories, complexity, epochs=1, seed=5)
    assert again[0] < losses[0]  # it goes on from where it was


@pytest.mark.slow
def test_train_with_a_linear_probe(tmp_path: Path, tiny_dataset: Path) -> None:
    from classifier_onnx.training.train import train

    data = tiny_dataset
    common: dict[str, Any] = {"epochs": 1, "max_steps": 1, "batch_size": 4,
                              "max_tokens": 16, "limit": 8, "layers": 1}
    probed = train(data, tmp_path / "lp", linear_probe=20, **common)
    plain = train(data, tmp_path / "plain", **common)
    assert probed["linear_probe_epochs"] == 20 and "linear_probe_epochs" not in plain
    import torch
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "lp" / "model.safetensors"))
    b = load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert not torch.equal(a["classifier.weight"], b["classifier.weight"])
    config = json.loads((tmp_path / "lp" / "config.json").read_text())
    assert config["n_layers"] == 1
