"""One settings tree for every process: built once at the entry point and passed down.

Values come, highest priority first, from keyword arguments, ``LLM_ROUTER_*`` environment
variables (``__`` separates nested fields), an optional YAML or TOML file, then the defaults
below. Library code never reads the environment itself.

Example::

    # LLM_ROUTER_KAFKA__BOOTSTRAP_SERVERS=broker:9092
    # LLM_ROUTER_TIERS__FAST__BASE_URL=http://vllm-fast:8000/v1
    settings = Settings.load("router.yaml")
    settings.topics.tier("fast")  # -> "llm.tier.fast"
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

__all__ = [
    "BrokerSettings",
    "CategoryRoute",
    "ClassifierSettings",
    "KafkaSettings",
    "ROUTER_OUTCOME_OWNERS",
    "ROUTER_TABLES",
    "RouterSettings",
    "Settings",
    "TierSettings",
    "TopicSettings",
    "ValidationSettings",
    "WorkerSettings",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(BaseModel):
    """How every client connects to the Kafka cluster."""

    model_config = _FROZEN

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "llm-router"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    request_timeout_ms: int = Field(default=30_000, gt=0)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and (
            self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                f"security_protocol={self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        return self


class TopicSettings(BaseModel):
    """Topic names and how `llm-router topics create` makes them."""

    model_config = _FROZEN

    requests: str = "llm.requests"
    tier_prefix: str = "llm.tier."
    uproute: str = "llm.uproute"
    responses: str = "llm.responses"
    deadletter: str = "llm.deadletter"
    partitions: int = Field(default=6, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)
    deadletter_retention_ms: int = Field(default=30 * 24 * 3600 * 1000, ge=-1)

    def tier(self, name: str) -> str:
        """The topic a tier's worker pool consumes."""
        return f"{self.tier_prefix}{name}"


class ValidationSettings(BaseModel):
    """Which answer checks a tier runs before it accepts an answer."""

    model_config = _FROZEN

    empty: bool = True
    truncated: bool = True
    format: bool = True
    max_chars: bool = True
    refusal: bool = True
    hedging: bool = True
    over_explanation: bool = True
    # An answer longer than this many times the request (and past the floor) is over-explained.
    over_explanation_ratio: float = Field(default=40.0, gt=0)
    over_explanation_floor_chars: int = Field(default=4000, ge=0)


class TierSettings(BaseModel):
    """One model tier: where its model is, how long to wait for it, what it costs."""

    model_config = _FROZEN

    provider: Literal["openai", "anthropic"] = "openai"
    base_url: str = "http://127.0.0.1:8101/v1"
    model: str = "model"
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=1.5, gt=0)
    connect_timeout_s: float = Field(default=1.0, gt=0)
    # Connection pool under the httpx client: aiohttp's (fast with thousands of connections in
    # use) or httpcore's own (HTTP/2 capable, slow past a few dozen busy connections).
    http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    # Multiply timeout_s by (score_timeout_floor + (1 - floor) * score) when enabled:
    # easy requests give up sooner.
    scale_timeout_by_score: bool = False
    score_timeout_floor: float = Field(default=0.5, gt=0, le=1)
    concurrency: int = Field(default=256, ge=1, le=100_000)
    max_output_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.2, ge=0, le=2)
    price_input_per_mtok: float = Field(default=0.0, ge=0)
    price_output_per_mtok: float = Field(default=0.0, ge=0)
    max_retries: int = Field(default=0, ge=0, le=10)
    retry_backoff_ms: int = Field(default=100, ge=0)
    validation: ValidationSettings = ValidationSettings()


class CategoryRoute(BaseModel):
    """Pins a category to a tier and/or a specific model."""

    model_config = _FROZEN

    tier: str | None = None
    model: str | None = None


# The router's Faust tables; each is backed by the compacted topic ``{app_id}-{name}-changelog``.
ROUTER_TABLES = ("conversations", "users")
# The router's internal topics ``{app_id}-{owner}-outcomes``: answers and up-routes re-keyed by
# conversation id and by user id, so that one router replica applies each to its table.
OutcomeOwner = Literal["conversation", "user"]
ROUTER_OUTCOME_OWNERS: tuple[OutcomeOwner, ...] = ("conversation", "user")


class RouterSettings(BaseModel):
    """The scoring agent and the route policy."""

    model_config = _FROZEN

    app_id: str = "llm-router"
    batch_max: int = Field(default=32, ge=1, le=4096)
    batch_within_ms: int = Field(default=5, ge=0, le=60_000)
    # Ascending score thresholds between consecutive tiers of the chain.
    thresholds: tuple[float, ...] = (0.3, 0.7)
    min_category_confidence: float = Field(default=0.45, ge=0, le=1)
    category_routes: dict[str, CategoryRoute] = {}
    depth_turn: int = Field(default=4, ge=1)
    depth_confidence: float = Field(default=0.9, ge=0, le=1)
    latch_idle_s: float = Field(default=1800.0, ge=0)
    history_min_outcomes: int = Field(default=5, ge=1)
    history_uproute_rate: float = Field(default=0.5, ge=0, le=1)
    history_margin: float = Field(default=0.1, ge=0, le=1)
    retry_same_tier: bool = False
    frontier_invalid: Literal["deadletter", "flag"] = "deadletter"
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    log_prompts: bool = False
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    web_port: int = Field(default=6066, ge=0, le=65535)
    store: str = "memory://"
    # Consumer-group liveness: how fast a dead router's partitions move to a live one.
    session_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=3.0, gt=0)
    # Crash-only watchdog: a partition with records waiting whose read position has not moved
    # for this long (outside a rebalance) makes the router exit with code 75 so that its
    # supervisor restarts it from the committed offsets. 0 turns the watchdog off.
    stall_timeout_s: float = Field(default=30.0, ge=0)
    # What a stalled router does: "exit" (status 75, for a supervisor: Kubernetes, compose)
    # or "restart" (re-executes itself in place, same pid and log: for `llm-router up`).
    on_stall: Literal["exit", "restart"] = "exit"
    # Faust's local state (RocksDB tables, offsets of standby tables).
    data_dir: Path = Path("var/router")

    @field_validator("thresholds")
    @classmethod
    def _ascending(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if list(value) != sorted(value) or any(not 0.0 <= t <= 1.0 for t in value):
            raise ValueError(f"thresholds must be ascending values in [0, 1], got {value}")
        return value

    def changelog_topics(self) -> list[str]:
        """The changelog topic of each router table (Faust's naming: app id, table, suffix)."""
        return [f"{self.app_id}-{table}-changelog" for table in ROUTER_TABLES]

    def outcome_topic(self, owner: OutcomeOwner) -> str:
        """The internal topic of outcomes keyed by ``owner`` id (conversation or user)."""
        return f"{self.app_id}-{owner}-outcomes"

    def outcome_topics(self) -> list[str]:
        """Both internal outcome topics (see :data:`ROUTER_OUTCOME_OWNERS`)."""
        return [self.outcome_topic(owner) for owner in ROUTER_OUTCOME_OWNERS]


class WorkerSettings(BaseModel):
    """Tier worker processes."""

    model_config = _FROZEN

    # Pause fetching when this many requests per process wait for a model call.
    max_pending: int | None = None
    dedup_size: int = Field(default=100_000, ge=0)
    commit_interval_ms: int = Field(default=500, ge=1)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    metrics_port: int = Field(default=0, ge=0, le=65535)


class ClassifierSettings(BaseModel):
    """The ONNX scoring runtime."""

    model_config = _FROZEN

    model_dir: Path | None = None
    threads: int = Field(default=1, ge=1, le=64)
    # onnxruntime's intra-op threads spin-wait between operators unless this is false.
    spin: bool = True
    max_tokens: int = Field(default=128, ge=8, le=512)
    max_chars: int = Field(default=2000, ge=64)


class BrokerSettings(BaseModel):
    """The embedded single-node Apache Kafka (KRaft) that `llm-router broker` runs."""

    model_config = _FROZEN

    kafka_version: str = "4.1.1"
    scala_version: str = "2.13"
    # An unpacked Apache Kafka distribution; used instead of resolving jars with Maven.
    kafka_home: Path | None = None
    data_dir: Path = Path("var/kafka")
    cache_dir: Path = Path.home() / ".cache" / "llm-router" / "kafka"
    host: str = "127.0.0.1"
    port: int = Field(default=9092, ge=1, le=65535)
    controller_port: int = Field(default=9093, ge=1, le=65535)
    heap_mb: int = Field(default=512, ge=128)
    start_timeout_s: float = Field(default=120.0, gt=0)
    extra_config: dict[str, str] = {}


def _default_tiers() -> dict[str, dict[str, Any]]:
    return {
        "fast": {
            "base_url": "http://127.0.0.1:8101/v1",
            "model": "smollm2-135m-instruct",
            "timeout_s": 0.5,
            "concurrency": 512,
            "price_input_per_mtok": 0.05,
            "price_output_per_mtok": 0.10,
        },
        "balanced": {
            "base_url": "http://127.0.0.1:8102/v1",
            "model": "qwen2.5-coder-0.5b-instruct",
            "timeout_s": 1.5,
            "concurrency": 256,
            "price_input_per_mtok": 0.50,
            "price_output_per_mtok": 1.50,
        },
        "frontier": {
            "base_url": "http://127.0.0.1:8103/v1",
            "model": "qwen2.5-coder-1.5b-instruct",
            "timeout_s": 5.0,
            "concurrency": 128,
            "price_input_per_mtok": 3.00,
            "price_output_per_mtok": 15.00,
        },
    }


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Settings(BaseSettings):
    """The whole configuration of a router deployment."""

    model_config = SettingsConfigDict(
        env_prefix="LLM_ROUTER_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    # Tiers by name; a partial override (one field of one tier) keeps the other defaults.
    tiers: dict[str, TierSettings] = Field(default_factory=lambda: {
        name: TierSettings(**values) for name, values in _default_tiers().items()
    })
    # The up-route chain, cheapest first. Every name must be in `tiers`.
    chain: tuple[str, ...] = ("fast", "balanced", "frontier")
    router: RouterSettings = RouterSettings()
    workers: WorkerSettings = WorkerSettings()
    classifier: ClassifierSettings = ClassifierSettings()
    broker: BrokerSettings = BrokerSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("tiers", mode="before")
    @classmethod
    def _merge_tier_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            return _deep_merge(_default_tiers(), value)
        return value

    @model_validator(mode="after")
    def _chain_consistent(self) -> Settings:
        if not self.chain:
            raise ValueError("chain must name at least one tier")
        missing = [name for name in self.chain if name not in self.tiers]
        if missing:
            raise ValueError(f"chain names tiers with no settings: {missing}")
        if len(set(self.chain)) != len(self.chain):
            raise ValueError(f"chain repeats a tier: {list(self.chain)}")
        if len(self.router.thresholds) != len(self.chain) - 1:
            raise ValueError(
                f"router.thresholds needs {len(self.chain) - 1} values for a chain of "
                f"{len(self.chain)} tiers, got {list(self.router.thresholds)}"
            )
        for category, route in self.router.category_routes.items():
            if route.tier is not None and route.tier not in self.chain:
                raise ValueError(f"category route {category!r} names unknown tier {route.tier!r}")
        return self

    def tier(self, name: str) -> TierSettings:
        """Settings of one tier of the chain (KeyError names the known tiers)."""
        try:
            return self.tiers[name]
        except KeyError:
            raise KeyError(f"unknown tier {name!r}; the chain is {list(self.chain)}") from None

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Build the settings from an optional YAML/TOML file, the environment and overrides."""
        if config_file is None:
            return cls(**overrides)
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"settings file not found: {path}")
        suffix = path.suffix.lower()
        if suffix not in {".yaml", ".yml", ".toml"}:
            raise ValueError(f"settings file must be .yaml, .yml or .toml, got {path.name}")

        class _FromFile(cls):  # type: ignore[valid-type,misc]
            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                file_source: PydanticBaseSettingsSource
                if suffix == ".toml":
                    file_source = TomlConfigSettingsSource(settings_cls, toml_file=path)
                else:
                    file_source = YamlConfigSettingsSource(settings_cls, yaml_file=path)
                return (init_settings, env_settings, file_source, file_secret_settings)

        # Re-validated as the plain class (no sources read again): callers get a `Settings`.
        return cls.model_validate(dict(_FromFile(**overrides)))
