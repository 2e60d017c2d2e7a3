"""The Grafana dashboard loads and queries only metrics the code defines.

Metric names are read from the metric definitions in ``streams/`` and ``workers/`` at test
time (``Counter("name", …)`` and so on), so renaming a metric without updating the dashboard
fails here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from deploy_helpers import DEPLOY, ROOT

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "llm-router.json"
# Metrics that come from elsewhere, and who exports them.
EXTERNAL = {
    "kafka_consumergroup_lag": "kafka-exporter (compose) / Strimzi Kafka Exporter",
    "up": "Prometheus itself",
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and",
    "or", "unless", "inf", "nan", "le",
}
_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*[\"']([a-zA-Z_:][\w:]*)"
)


def defined_metrics() -> set[str]:
    """Every series name the router and worker code can export."""
    names: set[str] = set()
    for package in ("streams", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            for kind, name in _DEFINITION.findall(path.read_text(encoding="utf-8")):
                # The series prometheus_client exposes, not the bare family name.
                if kind == "Counter":
                    base = name.removesuffix("_total")
                    names |= {f"{base}_total", f"{base}_created"}
                elif kind in ("Histogram", "Summary"):
                    names |= {f"{name}_{s}" for s in ("bucket", "sum", "count", "created")}
                else:
                    names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+|\$\{[^}]*\}", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][\w:]*", expr):
        rest = expr[match.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if match.group(0) in PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [p for p in found if p["type"] != "row"]


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, tier) (rate(a_bucket{x="y"}[5m]))) / '
        "scalar(sum(rate(b_total[$__rate_interval]))) * vector(0.76)"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}
    defined = defined_metrics()
    assert {"router_requests_total", "llm_router_worker_call_latency_seconds_bucket"} <= defined
    assert "router_requests" not in defined  # a counter's series end in _total


def test_dashboard_loads(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "llm-router"
    panels = _panels(dashboard)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_uses_defined_metrics(dashboard: dict[str, Any]) -> None:
    defined = defined_metrics() | set(EXTERNAL)
    unknown = {}
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            missing = metric_names(target["expr"]) - defined
            if missing:
                unknown[f"{panel['title']} [{target['refId']}]"] = sorted(missing)
    assert not unknown, f"queries read metrics no code defines: {unknown}"


def test_dashboard_covers_the_issue(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(t["expr"] for p in _panels(dashboard) for t in p["targets"])
    for needed in (
        "router_requests_total",  # traffic share per tier
        "vector(0.76)", "vector(0.18)", "vector(0.06)",  # the target split
        "llm_router_worker_call_latency_seconds_bucket",  # latency per tier and model
        "router_uproutes_total", "router_dead_letters_total",  # up-routes, dead letters
        "llm_router_worker_cost_usd_total",  # cost per hour
        "kafka_consumergroup_lag", "router_consumer_lag",  # lag per group
    ):
        assert needed in exprs, needed
