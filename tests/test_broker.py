"""The embedded broker's lifecycle, on brokers of their own (not the session broker).

Each test starts its own KafkaBroker on free ports and a temporary data directory, so a stop,
kill or failed start here cannot disturb the other tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from deploy.admin import create_topics, kafka_client_kwargs
from deploy.broker import (
    BrokerError,
    BrokerStartError,
    JarResolutionError,
    KafkaBroker,
    ensure_jars,
)
from schemas.settings import BrokerSettings, KafkaSettings, TopicSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def own_broker(make_broker: Callable[..., KafkaBroker]) -> KafkaBroker:
    """A broker of this test's own, not started; stopped at teardown."""
    return make_broker()


async def produce(kafka: KafkaSettings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**kafka_client_kwargs(kafka), acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def consume_all(kafka: KafkaSettings, topic: str, count: int) -> list[bytes]:
    """Read ``count`` records of partition 0 from the beginning (no consumer group)."""
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        values: list[bytes] = []
        while len(values) < count:
            batches = await consumer.getmany(partition, timeout_ms=1000)
            values += [record.value for record in batches.get(partition, [])]
        return values
    finally:
        await consumer.stop()


async def create_topic(kafka: KafkaSettings, topic: str) -> None:
    topics = TopicSettings(
        requests=topic,
        tier_prefix=f"{topic}.tier.",
        uproute=f"{topic}.uproute",
        responses=f"{topic}.responses",
        deadletter=f"{topic}.deadletter",
        partitions=1,
    )
    await create_topics(kafka, topics, [])


@pytest.mark.integration
@pytest.mark.slow
async def test_stop_start_and_kill_keep_data(own_broker: KafkaBroker) -> None:
    status = own_broker.status()
    assert status["running"] is False
    assert status["pid"] is None

    own_broker.start()
    status = own_broker.status()
    assert status["running"] is True
    assert status["ready"] is True
    assert isinstance(status["pid"], int)
    assert status["bootstrap_servers"] == own_broker.bootstrap_servers
    assert status["data_dir"] == own_broker.data_dir
    assert own_broker.pid_file.is_file()

    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap_servers)
    topic = "restart.test"
    first = [f"before-stop-{i}".encode() for i in range(20)]
    await asyncio.wait_for(create_topic(kafka, topic), 60)
    await asyncio.wait_for(produce(kafka, topic, first), 60)

    own_broker.stop()
    own_broker.stop()  # twice is safe
    assert own_broker.status()["running"] is False
    assert not own_broker.pid_file.exists()

    own_broker.start()
    own_broker.start()  # already running: a no-op
    second = [f"before-kill-{i}".encode() for i in range(20)]
    await asyncio.wait_for(produce(kafka, topic, second), 60)

    own_broker.kill()
    assert own_broker.status()["running"] is False
    own_broker.kill()  # twice is safe

    own_broker.start()
    assert await asyncio.wait_for(consume_all(kafka, topic, 40), 60) == first + second


@pytest.mark.integration
@pytest.mark.slow
def test_broker_started_by_another_process_is_found_and_stopped(own_broker: KafkaBroker) -> None:
    """What `llm-router broker start` then `broker stop` do: two processes, one pid file."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from deploy.broker import KafkaBroker
        from schemas.settings import BrokerSettings
        settings = BrokerSettings.model_validate_json({own_broker.settings.model_dump_json()!r})
        KafkaBroker(settings).start()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, check=True, timeout=240)

    status = own_broker.status()
    assert status["running"] is True
    assert status["ready"] is True

    own_broker.stop()
    assert own_broker.status()["running"] is False


@pytest.mark.integration
@pytest.mark.slow
def test_start_failure_reports_the_cause_and_log_tail(own_broker: KafkaBroker) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((own_broker.settings.host, own_broker.settings.port))
        squatter.listen()
        with pytest.raises(BrokerStartError) as caught:
            own_broker.start()

    error = caught.value
    assert isinstance(error, BrokerError)
    assert error.retriable is False
    assert "Address already in use" in str(error)
    assert "exited during start" in str(error)
    assert error.log_tail
    assert error.log_tail in str(error)
    status = own_broker.status()
    assert status["running"] is False
    assert not own_broker.pid_file.exists()


def test_ensure_jars_uses_kafka_home(tmp_path: Path) -> None:
    libs = tmp_path / "kafka" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-4.1.1.jar").touch()
    assert ensure_jars(BrokerSettings(kafka_home=tmp_path / "kafka")) == libs

    with pytest.raises(JarResolutionError, match="no kafka_"):
        ensure_jars(BrokerSettings(kafka_home=tmp_path))


def test_ensure_jars_without_maven_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn on it
    with pytest.raises(JarResolutionError, match=r"Maven \(mvn\) is not on PATH"):
        ensure_jars(BrokerSettings(cache_dir=tmp_path / "cache"))


def test_status_of_a_broker_never_started(tmp_path: Path) -> None:
    broker = KafkaBroker(BrokerSettings(data_dir=tmp_path / "absent"))
    status = broker.status()
    assert status["running"] is False
    assert status["pid"] is None
    assert status["ready"] is False
    broker.stop()  # nothing to stop: fine
    broker.kill()
    assert not (tmp_path / "absent").exists()
