"""The MiniLM -> DistilBERT conversion keeps the hidden states."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.train

# Real sentences of the kinds the classifier sees (from the mission and the bundled sample).
SENTENCES = [
    "What are your store hours on Sunday?",
    "I was charged twice for order #12345 and need a refund.",
    "Uploading files with UTF-8 names through multipart/form-data returns a 400 error.",
    "def has_close_elements(numbers: List[float], threshold: float) -> bool:",
    "Browse used Audi cars made before 2015 and sort by lowest price",
]


def test_distilbert_matches_bert_hidden_states() -> None:
    import torch
    from transformers import AutoTokenizer, BertModel

    from classifier_onnx.training.convert import load_minilm_as_distilbert, minilm_dir

    distil, config, directory = load_minilm_as_distilbert()
    assert directory == minilm_dir()
    assert (config.n_layers, config.dim, config.n_heads) == (6, 384, 12)
    bert = BertModel.from_pretrained(str(directory)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    enc = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = bert(**enc).last_hidden_state
        got = distil(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
    mask = enc["attention_mask"].bool()
    diff = (expected - got)[mask].abs().max().item()
    print(f"max abs hidden-state difference: {diff:.2e}")
    assert diff < 1e-5
    # Not a tautology: the hidden states carry signal (they differ between sentences).
    assert (expected[0, 0] - expected[1, 0]).abs().max().item() > 1e-2
