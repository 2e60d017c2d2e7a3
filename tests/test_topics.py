"""Topic creation against the real broker, and the KafkaSettings -> aiokafka translation."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import SecretStr

from deploy.admin import create_topics, deployment_topic_plan, kafka_client_kwargs, topic_plan
from schemas.settings import KafkaSettings, RouterSettings, Settings, TopicSettings

CHAIN = ("fast", "balanced", "frontier")


def expected_names(topics: TopicSettings) -> list[str]:
    prefix = topics.requests.removesuffix("llm.requests")
    return [
        f"{prefix}llm.requests",
        f"{prefix}llm.tier.fast",
        f"{prefix}llm.tier.balanced",
        f"{prefix}llm.tier.frontier",
        f"{prefix}llm.uproute",
        f"{prefix}llm.responses",
        f"{prefix}llm.deadletter",
    ]


async def describe(
    kafka: KafkaSettings, names: list[str]
) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """(partition count by topic, retention.ms by topic) as the broker reports them."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(kafka))
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        partitions = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
        responses = await admin.describe_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, name, {"retention.ms": None, "cleanup.policy": None}
                )
                for name in names
            ]
        )
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name, entries = resource[3], resource[4]
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return partitions, configs


@pytest.mark.integration
async def test_create_topics_creates_all_then_is_idempotent(
    kafka_settings: KafkaSettings, unique_topics: TopicSettings
) -> None:
    topics = unique_topics.model_copy(
        update={"partitions": 4, "retention_ms": 3_600_000, "deadletter_retention_ms": 7_200_000}
    )
    router = RouterSettings(app_id=f"{topics.requests}-app")
    changelogs, outcomes = router.changelog_topics(), router.outcome_topics()
    names = expected_names(topics) + outcomes + changelogs

    created = await asyncio.wait_for(
        create_topics(kafka_settings, topics, CHAIN, changelogs, outcomes), 60
    )
    assert created == names

    partitions, configs = await asyncio.wait_for(describe(kafka_settings, names), 30)
    assert partitions == {name: 4 for name in names}
    for name in [n for n in names if n != topics.deadletter and n not in changelogs]:
        assert configs[name]["retention.ms"] == "3600000", name
        assert configs[name]["cleanup.policy"] == "delete", name
    assert configs[topics.deadletter]["retention.ms"] == "7200000"
    for name in changelogs:
        assert configs[name]["cleanup.policy"] == "compact", name

    again = await asyncio.wait_for(
        create_topics(kafka_settings, topics, CHAIN, changelogs, outcomes), 60
    )
    assert again == []


@pytest.mark.integration
async def test_create_topics_creates_only_the_missing_ones(
    kafka_settings: KafkaSettings, unique_topics: TopicSettings
) -> None:
    first = await asyncio.wait_for(create_topics(kafka_settings, unique_topics, ["fast"]), 60)
    assert unique_topics.tier("fast") in first

    second = await asyncio.wait_for(
        create_topics(kafka_settings, unique_topics, ["fast", "frontier"]), 60
    )
    assert second == [unique_topics.tier("frontier")]


def test_topic_plan_orders_topics_along_the_pipeline() -> None:
    topics = TopicSettings(retention_ms=10, deadletter_retention_ms=20)
    plan = topic_plan(topics, ["a", "b"])
    assert list(plan) == [
        "llm.requests",
        "llm.tier.a",
        "llm.tier.b",
        "llm.uproute",
        "llm.responses",
        "llm.deadletter",
    ]
    assert plan["llm.tier.b"] == {"retention.ms": "10"}
    assert plan["llm.deadletter"] == {"retention.ms": "20"}


def test_topic_plan_adds_the_router_tables_changelogs_compacted() -> None:
    """The names are the ones Faust gives the router's tables (checked against the real app
    in tests/streams), so a router started after `topics create` finds them ready."""
    router = RouterSettings(app_id="r1")
    plan = topic_plan(TopicSettings(), ["fast"], router.changelog_topics())
    assert list(plan)[-2:] == ["r1-conversations-changelog", "r1-users-changelog"]
    assert plan["r1-users-changelog"] == {"cleanup.policy": "compact"}


def test_deployment_topic_plan_has_the_outcome_topics_before_the_changelogs() -> None:
    """The router's internal outcome topics are kept like the pipeline's topics."""
    settings = Settings(router={"app_id": "r1"}, topics={"retention_ms": 10})
    plan = deployment_topic_plan(settings)
    assert list(plan)[-4:] == [
        "r1-conversation-outcomes", "r1-user-outcomes",
        "r1-conversations-changelog", "r1-users-changelog",
    ]
    assert settings.router.outcome_topics() == list(plan)[-4:-2]
    assert settings.router.outcome_topic("user") == "r1-user-outcomes"
    assert plan["r1-user-outcomes"] == {"retention.ms": "10"}


def test_kafka_client_kwargs_plaintext() -> None:
    kwargs = kafka_client_kwargs(
        KafkaSettings(bootstrap_servers="b1:9092,b2:9092", client_id="c", request_timeout_ms=5000)
    )
    assert kwargs == {
        "bootstrap_servers": "b1:9092,b2:9092",
        "client_id": "c",
        "security_protocol": "PLAINTEXT",
        "request_timeout_ms": 5000,
    }


def test_kafka_client_kwargs_sasl_unwraps_the_secret() -> None:
    kwargs = kafka_client_kwargs(
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="router",
            sasl_password=SecretStr("s3cret"),
        )
    )
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "router"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert "ssl_context" not in kwargs


def test_kafka_client_kwargs_ssl_builds_a_context(tmp_path: Path) -> None:
    kwargs = kafka_client_kwargs(KafkaSettings(security_protocol="SSL"))
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in kwargs

    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(OSError):
        kafka_client_kwargs(KafkaSettings(security_protocol="SSL", ssl_cafile=missing))
