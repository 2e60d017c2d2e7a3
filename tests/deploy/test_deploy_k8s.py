"""deploy/k8s: every manifest validates against the Kubernetes (and KEDA) schemas and wires the
router and worker pools to the settings they run with.

Core kinds are validated, strictly (unknown fields are errors), with the schemas bundled by
the pip package ``kubernetes-validate``; KEDA ``ScaledObject``/``TriggerAuthentication`` with
the openAPIV3Schema of KEDA's own CRDs (vendored); Strimzi CRs structurally only (no schema
package). ``kubectl kustomize`` renders the kustomizations when kubectl is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_helpers import DEPLOY, load_yaml_documents, vendored_schema
from kubernetes_validate import utils as kubernetes_validate

from schemas.settings import Settings

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.33.0"
KUSTOMIZATIONS = [K8S / "base", K8S / "overlays" / "strimzi"]
KEDA_SCHEMAS = {
    "ScaledObject": "keda-scaledobject-v1alpha1.json",
    "TriggerAuthentication": "keda-triggerauthentication-v1alpha1.json",
}
STRIMZI_SPEC_KEYS = {
    "KafkaTopic": {"partitions", "replicas", "config", "topicName"},
    "KafkaUser": {"authentication", "authorization", "quotas", "template"},
}


def _resources(directory: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists (files and nested kustomizations), unpatched."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    found: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        found.extend(_resources(path) if path.is_dir() else load_yaml_documents(path))
    return found


def _validate(doc: dict[str, Any]) -> None:
    kind, api = doc["kind"], doc["apiVersion"]
    if api == "keda.sh/v1alpha1":
        jsonschema.Draft7Validator(vendored_schema(KEDA_SCHEMAS[kind])).validate(doc)
    elif api.startswith("kafka.strimzi.io/"):
        assert api == "kafka.strimzi.io/v1beta2", api
        assert doc["metadata"]["labels"]["strimzi.io/cluster"]
        assert set(doc["spec"]) <= STRIMZI_SPEC_KEYS[kind], doc["spec"]
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def _all_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_documents(path):
            if isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc:
                docs.append((f"{path.relative_to(K8S)}:{doc['kind']}", doc))
    return docs


@pytest.mark.parametrize(("where", "doc"), _all_documents(), ids=lambda v: str(v))
def test_manifest_validates(where: str, doc: dict[str, Any]) -> None:
    if doc.get("$patch") == "delete":
        return  # a deletion patch names its target only
    _validate(doc)


def test_invalid_manifests_are_rejected() -> None:
    deployment = next(d for d in _resources(K8S / "base") if d["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(jsonschema.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    scaled = next(d for d in _resources(K8S / "base") if d["kind"] == "ScaledObject")
    broken = yaml.safe_load(yaml.safe_dump(scaled))
    del broken["spec"]["scaleTargetRef"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)


def _settings_from_configmap(docs: list[dict[str, Any]], tmp_path: Path) -> Settings:
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    path = tmp_path / "router.yaml"
    path.write_text(config["data"]["router.yaml"])
    return Settings.load(path)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_config_and_secret_are_settings(
    directory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _resources(directory)
    for doc in docs:
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == "llm-router-secrets":
            for key, value in doc["stringData"].items():
                monkeypatch.setenv(key, value or "x")
    settings = _settings_from_configmap(docs, tmp_path)  # extra="forbid": typos fail
    assert settings.workers.metrics_port == 9500


def test_base_wiring(tmp_path: Path) -> None:
    docs = _resources(K8S / "base")
    settings = _settings_from_configmap(docs, tmp_path)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    pdbs = by_kind["PodDisruptionBudget"]
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind["ScaledObject"]}
    assert set(deployments) == {"llm-router", *(f"llm-router-worker-{t}" for t in settings.chain)}

    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        container = pod["spec"]["containers"][0]
        assert container["args"][:2] == ["--config", "/etc/llm-router/router.yaml"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert probe in container, f"{name}: no {probe}"
        matching = [
            p for p in pdbs
            if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, f"{name}: {len(matching)} PodDisruptionBudgets"

    router = deployments["llm-router"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in router["ports"]}
    assert ports == {"metrics": settings.router.metrics_port, "web": settings.router.web_port}
    assert router["args"][2:] == ["router"]

    for tier in settings.chain:
        name = f"llm-router-worker-{tier}"
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][2:] == ["worker", "--tier", tier]
        assert container["ports"] == [
            {"name": "metrics", "containerPort": settings.workers.metrics_port}
        ]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == f"{settings.router.app_id}-{tier}"
        assert trigger["metadata"]["topic"] == settings.topics.tier(tier)
        assert int(trigger["metadata"]["lagThreshold"]) > 0
        assert trigger["metadata"]["bootstrapServers"] == settings.kafka.bootstrap_servers
        # More consumers than partitions idle.
        assert scaled[name]["spec"]["maxReplicaCount"] <= settings.topics.partitions


def test_strimzi_topics_match_the_topic_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy.admin import deployment_topic_plan

    # What kafka-credentials.yaml sets from the KafkaUser's Secret.
    patch = load_yaml_documents(K8S / "overlays" / "strimzi" / "kafka-credentials.yaml")[0]
    (variable,) = patch[0]["value"]
    monkeypatch.setenv(variable["name"], "scram-password")
    docs = _resources(K8S / "overlays" / "strimzi")
    overlay = load_yaml_documents(K8S / "overlays" / "strimzi" / "config.yaml")
    settings = _settings_from_configmap(overlay, tmp_path)
    assert settings.kafka.security_protocol == "SASL_SSL"
    topics = {d["spec"]["topicName"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    plan = deployment_topic_plan(settings)
    assert set(topics) == set(plan)
    for name, configs in plan.items():
        assert topics[name]["partitions"] == settings.topics.partitions
        for key, value in configs.items():
            assert topics[name]["config"][key] == value, (name, key)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomize_renders_valid_manifests(directory: Path) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    has_topics_job = any(d["kind"] == "Job" for d in docs)
    assert has_topics_job == (directory.name == "base")  # Strimzi: KafkaTopic CRs instead
    for doc in docs:
        _validate(doc)
