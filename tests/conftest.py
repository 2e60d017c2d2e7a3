"""Shared fixtures: one real Kafka broker per session, fresh topic names per test.

Broker
    ``kafka_broker`` (session) starts a real single-node Apache Kafka through
    :class:`deploy.broker.KafkaBroker` on free ports with a temporary data directory, and
    stops it at the end of the session. Set ``LLM_ROUTER_TEST_BOOTSTRAP=host:port`` to run
    against an external broker instead (it must allow topic creation). Nothing is skipped:
    if the broker cannot be started, the tests that use it error with the reason.

Per test
    ``kafka_settings``   KafkaSettings pointing at that broker.
    ``unique_topics``    TopicSettings whose names carry a fresh ``t-<uuid8>.`` prefix
                         (alias: ``topic_names``); nothing is created.
    ``created_topics``   the same, with every topic created (default chain).
    ``make_broker``      factory of extra brokers of the test's own (free ports, tmp data
                         dir), stopped at teardown: for restart and fault-injection tests.
    ``group_id``         a fresh consumer group id.
    ``make_settings``    factory: ``make_settings(**overrides) -> Settings`` wired to the
                         broker and to this test's topics.
    ``model_servers``    one started local ModelServer per tier of the default chain.

Every wait in a test is bounded: wrap awaits on the broker in ``asyncio.wait_for``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deploy.admin import create_topics
from deploy.broker import KafkaBroker
from schemas.settings import BrokerSettings, KafkaSettings, Settings, TopicSettings

if TYPE_CHECKING:
    from workers.testing import ModelServer

# Partitions of the per-test topics: enough to exercise keyed routing, cheap to create.
TEST_PARTITIONS = 3
DEFAULT_CHAIN = Settings.model_fields["chain"].default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def broker_settings(data_dir: Path, **overrides: Any) -> BrokerSettings:
    """BrokerSettings for a test broker: free ports, small heap, the given data directory."""
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "port": port,
        "controller_port": controller_port,
        "heap_mb": 512,
        "start_timeout_s": 180.0,
    }
    values.update(overrides)
    return BrokerSettings(**values)


@dataclass(frozen=True)
class ExternalBroker:
    """A broker this test session did not start (``LLM_ROUTER_TEST_BOOTSTRAP``)."""

    bootstrap_servers: str


@pytest.fixture(scope="session")
def kafka_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KafkaBroker | ExternalBroker]:
    """The session's Kafka broker; anything with ``.bootstrap_servers``."""
    external = os.environ.get("LLM_ROUTER_TEST_BOOTSTRAP")
    if external:
        yield ExternalBroker(external)
        return
    broker = KafkaBroker(broker_settings(tmp_path_factory.mktemp("kafka")), die_with_parent=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., KafkaBroker]]:
    """Factory of brokers (not started) separate from the session one; all stopped after.

    ``make_broker(heap_mb=256)``: keyword arguments override the BrokerSettings.
    """
    brokers: list[KafkaBroker] = []

    def make(**overrides: Any) -> KafkaBroker:
        data_dir = tmp_path / f"kafka-{len(brokers)}"
        broker = KafkaBroker(broker_settings(data_dir, **overrides), die_with_parent=True)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def kafka_settings(kafka_broker: KafkaBroker | ExternalBroker) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers, client_id="llm-router-test"
    )


@pytest.fixture
def unique_topics() -> TopicSettings:
    """Topic names no other test uses: ``t-<uuid8>.llm.requests`` and so on."""
    prefix = f"t-{uuid.uuid4().hex[:8]}."
    return TopicSettings(
        requests=f"{prefix}llm.requests",
        tier_prefix=f"{prefix}llm.tier.",
        uproute=f"{prefix}llm.uproute",
        responses=f"{prefix}llm.responses",
        deadletter=f"{prefix}llm.deadletter",
        partitions=TEST_PARTITIONS,
    )


@pytest.fixture
def topic_names(unique_topics: TopicSettings) -> TopicSettings:
    """Alias of ``unique_topics``."""
    return unique_topics


@pytest.fixture
async def created_topics(
    kafka_settings: KafkaSettings, unique_topics: TopicSettings
) -> TopicSettings:
    """``unique_topics`` with every topic of the default chain created on the broker."""
    await create_topics(kafka_settings, unique_topics, DEFAULT_CHAIN)
    return unique_topics


@pytest.fixture
def group_id() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_settings(
    kafka_settings: KafkaSettings, unique_topics: TopicSettings
) -> Callable[..., Settings]:
    """Factory of full Settings wired to the test broker and this test's topics.

    ``make_settings(router={"thresholds": (0.5,)}, chain=("fast", "frontier"))``; keyword
    arguments override whole top-level fields, ``kafka`` and ``topics`` included.
    """

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"kafka": kafka_settings, "topics": unique_topics}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def model_servers() -> Iterator[dict[str, ModelServer]]:
    """One started ModelServer per tier of the default chain, answering ``ok``."""
    # Imported here: under tests/ a directory named ``workers`` can shadow the package
    # until a conftest of a subdirectory has put the project root first.
    from workers.testing import ModelServer

    servers = {tier: ModelServer() for tier in Settings.model_fields["chain"].default}
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()
