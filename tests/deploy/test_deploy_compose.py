"""deploy/compose: the compose file is valid Compose and wires the stack as documented.

No container engine runs in CI, so ``docker compose config`` cannot run here. The closest
honest check: parse the file (YAML anchors and merge keys, as compose does), interpolate
``${VAR:-default}`` from ``.env`` like compose, and validate the result against the official
Compose Specification JSON Schema (vendored in tests/deploy/schemas/compose-spec.json).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_helpers import DEPLOY, ROOT, vendored_schema

from schemas.settings import Settings

COMPOSE = DEPLOY / "compose" / "compose.yaml"
TIERS = Settings.model_validate({}).chain
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name.strip()] = value.strip()
    return values


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    env = _dotenv(DEPLOY / "compose" / ".env")
    resolved: dict[str, Any] = _interpolate(raw, env)
    return resolved


def test_compose_file_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(vendored_schema("compose-spec.json"))
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:10]
    )


def test_compose_spec_schema_rejects_nonsense(compose: dict[str, Any]) -> None:
    broken = {**compose, "services": {**compose["services"], "router": {"image": 3, "ports": {}}}}
    assert list(jsonschema.Draft7Validator(vendored_schema("compose-spec.json")).iter_errors(
        broken
    ))


def test_services_are_wired(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["router"]["command"] == ["router"]
    for name in ("topics", "router", *(f"worker-{t}" for t in TIERS)):
        service = services[name]
        assert service["build"]["context"] == "../.."
        assert (COMPOSE.parent / service["build"]["context"] / "Dockerfile").is_file()
        assert service["environment"]["LLM_ROUTER_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    for tier in TIERS:
        worker = services[f"worker-{tier}"]
        # Scalable with --scale: no fixed name, no host ports.
        assert "container_name" not in worker
        assert "ports" not in worker
        assert worker["command"] == ["worker", "--tier", tier]
        assert worker["environment"]["LLM_ROUTER_WORKERS__METRICS_PORT"] == "9500"
        assert "9500/healthz" in " ".join(worker["healthcheck"]["test"])
        base_url = worker["environment"][f"LLM_ROUTER_TIERS__{tier.upper()}__BASE_URL"]
        assert base_url == f"http://llm-{tier}:8080/v1"
        assert services[f"llm-{tier}"]["profiles"] == ["models"]
        assert worker["depends_on"][f"llm-{tier}"]["required"] is False


def test_container_environment_builds_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every LLM_ROUTER_* variable compose sets must be a setting the containers accept.
    for name in ("router", *(f"worker-{t}" for t in TIERS)):
        with monkeypatch.context() as patch:
            for key, value in compose["services"][name]["environment"].items():
                patch.setenv(key, str(value))
            settings = Settings()
            assert settings.kafka.bootstrap_servers == "kafka:9092"


def test_prometheus_scrapes_router_workers_and_lag(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    defaults = Settings.model_validate({})
    router_target = jobs["llm-router"]["static_configs"][0]["targets"][0]
    assert router_target == f"router:{defaults.router.metrics_port}"
    names = jobs["llm-router-workers"]["dns_sd_configs"][0]["names"]
    assert sorted(names) == sorted(f"worker-{t}" for t in TIERS)
    assert jobs["llm-router-workers"]["dns_sd_configs"][0]["port"] == 9500
    assert jobs["kafka-exporter"]["static_configs"][0]["targets"] == ["kafka-exporter:9308"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert any(m.startswith("../prometheus/prometheus.yml:") for m in mounts)


def test_grafana_is_provisioned(compose: dict[str, Any]) -> None:
    grafana = DEPLOY / "grafana"
    datasource = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((grafana / "provisioning/dashboards/llm-router.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = dict(m.split(":")[:2][::-1] for m in compose["services"]["grafana"]["volumes"])
    assert (COMPOSE.parent / mounts[path] / "llm-router.json").is_file()


def test_dockerfile_is_multi_stage_non_root_without_training_deps() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, flags=re.M)
    assert stages == ["builder", "runtime"]
    runtime = dockerfile.split("AS runtime", 1)[1]
    assert re.search(r"^USER\s+10001", runtime, flags=re.M)
    assert 'ENTRYPOINT ["llm-router"]' in runtime
    installs = re.findall(r"pip install ([^\n\\]*)", dockerfile)
    assert installs == ["--no-compile . "]  # the runtime dependencies: no train/local extra
    assert "COPY classifier_onnx/" in dockerfile
    assert (ROOT / "classifier_onnx" / "model" / "model.onnx").is_file()
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "classifier_onnx/training/" in ignored
    assert "!classifier_onnx/" in ignored
