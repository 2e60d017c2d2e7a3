"""The settings tree: defaults, environment, files, and the mistakes it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import Settings


def test_defaults_match_the_design() -> None:
    settings = Settings()
    assert settings.chain == ("fast", "balanced", "frontier")
    assert [settings.tier(t).timeout_s for t in settings.chain] == [0.5, 1.5, 5.0]
    assert settings.router.thresholds == (0.3, 0.7)
    assert settings.topics.requests == "llm.requests"
    assert settings.topics.tier("frontier") == "llm.tier.frontier"
    assert settings.router.depth_turn == 4


def test_environment_overrides_one_field_of_one_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_ROUTER_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("LLM_ROUTER_TIERS__FAST__BASE_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("LLM_ROUTER_TIERS__FAST__API_KEY", "sk-secret-123")
    monkeypatch.setenv("LLM_ROUTER_ROUTER__THRESHOLDS", "[0.2, 0.8]")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    fast = settings.tier("fast")
    assert fast.base_url == "http://vllm:8000/v1"
    assert fast.timeout_s == 0.5  # the other defaults of that tier stay
    assert fast.api_key is not None and fast.api_key.get_secret_value() == "sk-secret-123"
    assert "sk-secret-123" not in repr(settings)
    assert "sk-secret-123" not in settings.model_dump_json()
    assert settings.router.thresholds == (0.2, 0.8)


def test_yaml_file_and_env_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        "kafka:\n  bootstrap_servers: from-file:9092\n"
        "topics:\n  partitions: 12\n"
        "tiers:\n  frontier:\n    provider: anthropic\n    model: claude\n"
        "router:\n  category_routes:\n    code: {tier: balanced, model: coder}\n"
    )
    settings = Settings.load(config)
    assert settings.kafka.bootstrap_servers == "from-file:9092"
    assert settings.topics.partitions == 12
    assert settings.tier("frontier").provider == "anthropic"
    assert settings.tier("frontier").timeout_s == 5.0
    assert settings.router.category_routes["code"].model == "coder"
    monkeypatch.setenv("LLM_ROUTER_TOPICS__PARTITIONS", "3")
    assert Settings.load(config).topics.partitions == 3


def test_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('chain = ["fast", "frontier"]\n[router]\nthresholds = [0.5]\n')
    settings = Settings.load(config)
    assert settings.chain == ("fast", "frontier")


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.log_level = "DEBUG"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"chain": ("fast", "ultra")}, "no settings: ['ultra']"),
        ({"chain": ("fast", "fast")}, "repeats a tier"),
        ({"router": {"thresholds": (0.7, 0.3)}}, "ascending"),
        ({"router": {"thresholds": (0.3,)}}, "needs 2 values"),
        ({"router": {"category_routes": {"code": {"tier": "gpu"}}}}, "unknown tier 'gpu'"),
        ({"kafka": {"security_protocol": "SASL_SSL"}}, "needs sasl_mechanism"),
        ({"tiers": {"fast": {"timeout_s": 0}}}, "greater than 0"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(
    overrides: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        Settings(**overrides)  # type: ignore[arg-type]


def test_missing_or_odd_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Settings.load(tmp_path / "nope.yaml")
    odd = tmp_path / "settings.ini"
    odd.write_text("")
    with pytest.raises(ValueError, match="yaml"):
        Settings.load(odd)


def test_unknown_tier_lookup_names_the_chain() -> None:
    with pytest.raises(KeyError, match="the chain is"):
        Settings().tier("gpu")
