"""Kafka client options and topic creation.

:func:`kafka_client_kwargs` is the one place that turns :class:`KafkaSettings` into aiokafka
keyword arguments; every producer, consumer and admin client is built from it::

    producer = AIOKafkaProducer(**kafka_client_kwargs(settings.kafka), acks="all")

:func:`create_all_topics` makes every topic of a deployment up front (``llm-router topics
create``), the router's internal outcome topics and its tables' changelogs included;
:func:`create_topics` takes the parts::

    created = await create_all_topics(settings)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code
from aiokafka.helpers import create_ssl_context

from schemas.errors import RouterError
from schemas.settings import KafkaSettings, Settings, TopicSettings

__all__ = [
    "TopicCreationError",
    "create_all_topics",
    "create_topics",
    "deployment_topic_plan",
    "kafka_client_kwargs",
    "topic_plan",
]

logger = logging.getLogger(__name__)

# Kafka error codes create_topics treats as success.
_NO_ERROR = 0
_TOPIC_ALREADY_EXISTS = 36


class TopicCreationError(RouterError):
    """The broker refused to create a topic; ``errors`` maps topic name to the reason."""

    def __init__(self, errors: dict[str, str]) -> None:
        details = "; ".join(f"{topic}: {reason}" for topic, reason in sorted(errors.items()))
        super().__init__(f"could not create {len(errors)} topic(s): {details}")
        self.errors = errors


def kafka_client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka client keyword arguments (producer, consumer or admin) for ``kafka``.

    SASL credentials are unwrapped from their ``SecretStr`` here and nowhere else; an SSL
    context is built from the configured CA, certificate and key files.
    """
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password is not None else None
        )
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_cafile,
            certfile=kafka.ssl_certfile,
            keyfile=kafka.ssl_keyfile,
        )
    return kwargs


def topic_plan(
    topics: TopicSettings,
    chain: Sequence[str],
    changelogs: Sequence[str] = (),
    outcomes: Sequence[str] = (),
) -> dict[str, dict[str, str]]:
    """Every topic the router uses, in pipeline order, with its topic configs.

    ``outcomes`` are the router's internal outcome topics
    (:meth:`~schemas.settings.RouterSettings.outcome_topics`), kept like the pipeline's;
    ``changelogs`` are the router tables' changelog topics
    (:meth:`~schemas.settings.RouterSettings.changelog_topics`): compacted, never expired.
    Faust would create both on the router's first start, but creating them here means a
    fresh router never waits for a topic that is still being made, and every replica's
    first assignment already places them with the requests (Faust ignores a topic that does
    not exist yet when it assigns partitions).
    """
    retention = {"retention.ms": str(topics.retention_ms)}
    plan = {topics.requests: retention}
    plan.update({topics.tier(name): retention for name in chain})
    plan[topics.uproute] = retention
    plan[topics.responses] = retention
    plan[topics.deadletter] = {"retention.ms": str(topics.deadletter_retention_ms)}
    plan.update({name: retention for name in outcomes})
    plan.update({name: {"cleanup.policy": "compact"} for name in changelogs})
    return plan


def deployment_topic_plan(settings: Settings) -> dict[str, dict[str, str]]:
    """:func:`topic_plan` of a deployment of ``settings``: what :func:`create_all_topics`
    makes (and the Strimzi ``KafkaTopic`` resources declare)."""
    router = settings.router
    return topic_plan(
        settings.topics, settings.chain, router.changelog_topics(), router.outcome_topics()
    )


async def create_topics(
    kafka: KafkaSettings,
    topics: TopicSettings,
    chain: Sequence[str],
    changelogs: Sequence[str] = (),
    outcomes: Sequence[str] = (),
) -> list[str]:
    """Create the requests, per-tier, up-route, responses and dead-letter topics, the
    router's internal ``outcomes`` topics and its tables' ``changelogs``.

    Idempotent: topics that already exist are left as they are (their partition count and
    configs are not changed) and logged. Returns the names created by this call, in pipeline
    order. Raises :class:`TopicCreationError` if the broker refuses any topic.
    """
    return await _create_planned(kafka, topics, topic_plan(topics, chain, changelogs, outcomes))


async def create_all_topics(settings: Settings) -> list[str]:
    """:func:`create_topics` for a deployment of ``settings``: the pipeline's topics, the
    router's outcome topics and its tables' changelogs (:func:`deployment_topic_plan`)."""
    return await _create_planned(settings.kafka, settings.topics, deployment_topic_plan(settings))


async def _create_planned(
    kafka: KafkaSettings, topics: TopicSettings, plan: dict[str, dict[str, str]]
) -> list[str]:
    """Create the topics of ``plan`` that do not exist yet (see :func:`create_topics`)."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in plan if name not in existing]
        for name in plan:
            if name in existing:
                logger.info("topic %s already exists", name)
        if not missing:
            return []
        new_topics = [
            NewTopic(
                name=name,
                num_partitions=topics.partitions,
                replication_factor=topics.replication_factor,
                topic_configs=plan[name],
            )
            for name in missing
        ]
        response = await admin.create_topics(new_topics)
    finally:
        await admin.close()

    created: list[str] = []
    errors: dict[str, str] = {}
    for topic_error in response.topic_errors:
        # v0: (topic, error_code); v1 and later: (topic, error_code, error_message).
        name, code = topic_error[0], topic_error[1]
        if code == _NO_ERROR:
            created.append(name)
        elif code == _TOPIC_ALREADY_EXISTS:
            logger.info("topic %s already exists (created concurrently)", name)
        else:
            message = topic_error[2] if len(topic_error) > 2 and topic_error[2] else ""
            errors[name] = f"{for_code(code).__name__}: {message}".rstrip(": ")
    if errors:
        raise TopicCreationError(errors)
    for name in created:
        logger.info(
            "created topic %s (%d partitions, replication factor %d, %s)",
            name,
            topics.partitions,
            topics.replication_factor,
            plan[name],
        )
    return [name for name in plan if name in created]
