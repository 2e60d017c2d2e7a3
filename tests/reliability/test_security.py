"""Security: SASL against the real broker, and secrets and prompts kept out of logs.

* A broker with a SASL_PLAINTEXT and a SASL_SSL listener (``deploy.broker.SaslListener``,
  a throwaway CA) serves clients built by ``deploy.admin.kafka_client_kwargs`` with PLAIN,
  SCRAM-SHA-256 and SCRAM-SHA-512; a wrong password is refused with the broker's reason, a
  client that does not trust the broker's certificate with the TLS error.
* The router and the worker pools run over SASL_SSL (SCRAM-SHA-512) with a planted API key
  and a planted SASL password; neither appears in any process log, in ``/metrics`` of the
  router or a worker, in any dead letter or answer, or in the broker's log. Prompt text (a
  unique marker) is not logged at the default settings.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from reliability_helpers import SASL_USERS

from bench.harness import Stack, make_request, metrics_text, read_topic
from deploy.admin import create_all_topics, create_topics, kafka_client_kwargs
from deploy.broker import KafkaBroker, SaslListener, SaslProtocol
from schemas.codec import encode
from schemas.messages import ChatMessage
from schemas.settings import KafkaSettings, Settings, TopicSettings
from streams.client import RequestDeadLettered, RouterClient
from tests.conftest import free_port
from workers.testing import Behaviour, ModelServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_KEY = "sk-PLANTED-" + uuid.uuid4().hex
SASL_USER = "router"
SASL_PASSWORD = SASL_USERS[SASL_USER]


def sasl_kafka(
    broker: KafkaBroker,
    mechanism: str,
    user: str,
    password: str,
    *,
    protocol: SaslProtocol = "SASL_PLAINTEXT",
    cafile: Path | None = None,
) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers_for(protocol),
        client_id="rel-sasl",
        security_protocol=protocol,
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username=user,
        sasl_password=password,  # type: ignore[arg-type]
        ssl_cafile=cafile,
    )


async def refused_start(kafka: KafkaSettings, caplog: pytest.LogCaptureFixture) -> str:
    """Start a producer the broker must refuse; aiokafka's error log of the attempt."""
    producer = AIOKafkaProducer(**kafka_client_kwargs(kafka))
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        try:
            with pytest.raises(KafkaConnectionError):
                await asyncio.wait_for(producer.start(), 60)
        finally:
            await producer.stop()
    return " ".join(record.getMessage() for record in caplog.records)


def topics_named(prefix: str) -> TopicSettings:
    return TopicSettings(
        requests=f"{prefix}.requests", tier_prefix=f"{prefix}.tier.",
        uproute=f"{prefix}.uproute", responses=f"{prefix}.responses",
        deadletter=f"{prefix}.deadletter", partitions=3,
    )


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_SSL", "PLAIN"),
        ("SASL_SSL", "SCRAM-SHA-512"),
    ],
)
async def test_sasl_clients_produce_and_consume(
    sasl_broker: KafkaBroker,
    tls_files: tuple[Path, Path],
    protocol: SaslProtocol,
    mechanism: str,
) -> None:
    kafka = sasl_kafka(
        sasl_broker, mechanism, SASL_USER, SASL_PASSWORD, protocol=protocol,
        cafile=tls_files[0] if protocol == "SASL_SSL" else None,
    )
    topics = topics_named(f"sasl-{uuid.uuid4().hex[:8]}")
    await asyncio.wait_for(create_topics(kafka, topics, ["fast"]), 60)

    producer = AIOKafkaProducer(**kafka_client_kwargs(kafka), acks="all")
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(kafka), enable_auto_commit=False)

    async def round_trip() -> list[bytes]:
        await producer.start()
        values = [f"{mechanism}-{i}".encode() for i in range(10)]
        for value in values:
            await producer.send_and_wait(topics.requests, value, partition=0)
        await consumer.start()
        partition = TopicPartition(topics.requests, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        got: list[bytes] = []
        while len(got) < len(values):
            batch = await consumer.getmany(partition, timeout_ms=1000)
            got += [r.value for r in batch.get(partition, [])]
        return got

    try:
        got = await asyncio.wait_for(round_trip(), 60)
    finally:
        await producer.stop()
        await consumer.stop()
    assert got == [f"{mechanism}-{i}".encode() for i in range(10)]


@pytest.mark.parametrize(
    ("mechanism", "reason"),
    [("PLAIN", "Invalid username or password"), ("SCRAM-SHA-256", "invalid credentials")],
)
async def test_a_wrong_sasl_password_is_refused_with_the_reason(
    sasl_broker: KafkaBroker, mechanism: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = sasl_kafka(sasl_broker, mechanism, SASL_USER, "not-the-password")
    messages = await refused_start(kafka, caplog)
    assert "SaslAuthenticationFailed" in messages
    assert reason in messages
    assert "not-the-password" not in messages


async def test_a_client_that_does_not_trust_the_broker_certificate_is_refused(
    sasl_broker: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the broker's CA (the system's CAs only) the TLS handshake fails, and the log
    says why; the password is never sent."""
    kafka = sasl_kafka(sasl_broker, "PLAIN", SASL_USER, SASL_PASSWORD, protocol="SASL_SSL")
    messages = await refused_start(kafka, caplog)
    assert "CERTIFICATE_VERIFY_FAILED" in messages
    assert SASL_PASSWORD not in messages


def test_sasl_listener_keeps_its_passwords_out_of_reprs_and_files(
    sasl_broker: KafkaBroker,
) -> None:
    listener = sasl_broker.sasl
    assert listener is not None
    assert SASL_PASSWORD not in repr(listener)
    assert SASL_PASSWORD not in repr(sasl_broker)
    # server.properties holds the PLAIN users' passwords: owner-only.
    mode = stat.S_IMODE(sasl_broker.properties_file.stat().st_mode)
    assert mode == 0o600
    # Kafka prints its config at start with passwords hidden.
    assert SASL_PASSWORD not in sasl_broker.log_file.read_text(errors="replace")
    with pytest.raises(ValueError, match="password"):
        SaslListener(port=9999, users={"a": 'quote"d'})
    with pytest.raises(ValueError, match="user name"):
        SaslListener(port=9999, users={"a b": "x"})
    with pytest.raises(ValueError, match="mechanisms"):
        SaslListener(port=9999, users={"a": "x"}, mechanisms=("GSSAPI",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SASL port"):
        KafkaBroker(sasl_broker.settings, sasl=SaslListener(sasl_broker.settings.port, {"a": "x"}))
    with pytest.raises(ValueError, match="one SASL listener per protocol"):
        KafkaBroker(sasl_broker.settings, sasl=[SaslListener(1, {"a": "x"}),
                                                SaslListener(2, {"a": "x"})])
    properties = sasl_broker.properties_file.read_text(encoding="utf-8")
    assert "listener.name.sasl_ssl.ssl.keystore.type=PEM" in properties
    assert "SASL_SSL://127.0.0.1:" in properties


async def test_secrets_and_prompts_stay_out_of_logs_metrics_and_dead_letters(
    sasl_broker: KafkaBroker,
    tls_files: tuple[Path, Path],
    model_servers: dict[str, ModelServer],
    stack_settings: Callable[..., Settings],
    stacks: Callable[..., Stack],
) -> None:
    marker = f"PROMPT-MARKER-{uuid.uuid4().hex}"
    # The whole pipeline (Faust router, workers, client SDK) over TLS with SCRAM-SHA-512.
    kafka = sasl_kafka(
        sasl_broker, "SCRAM-SHA-512", SASL_USER, SASL_PASSWORD, protocol="SASL_SSL",
        cafile=tls_files[0],
    )
    topics = topics_named(f"sec-{uuid.uuid4().hex[:8]}")
    # Every tier carries the key; the frontier answers 401 (its error goes into attempts and
    # the dead letter), so a key echoed into an error would be found.
    settings = stack_settings(
        kafka=kafka, topics=topics,
        tiers={tier: {"api_key": API_KEY} for tier in ("fast", "balanced", "frontier")},
    )
    await asyncio.wait_for(create_all_topics(settings), 60)
    model_servers["frontier"].behaviour = Behaviour.fail(401)
    stack = stacks(settings, workers={})
    worker_ports = {tier: free_port() for tier in settings.chain}

    async def scenario() -> None:
        async with stack:
            for tier, port in worker_ports.items():
                stack.start_worker(tier, env={"LLM_ROUTER_WORKERS__METRICS_PORT": str(port)})
            client = RouterClient(settings)
            await asyncio.wait_for(client.start(), 60)
            try:
                await _traffic(settings, client, marker)
            finally:
                await client.stop()
            texts = [metrics_text(settings.router.metrics_port)]
            texts += [metrics_text(port) for port in worker_ports.values()]
            for text in texts:
                assert API_KEY not in text
                assert SASL_PASSWORD not in text
                assert marker not in text
            assert any("llm_router" in text or "worker" in text for text in texts)

    await asyncio.wait_for(scenario(), 300)

    # The key was really used: the model servers got it.
    headers = [r.headers for s in model_servers.values() for r in s.received]
    assert headers and all(
        h.get("Authorization", h.get("authorization")) == f"Bearer {API_KEY}" for h in headers
    )
    logs = stack.logs()
    assert {"router", "worker-fast-0", "worker-balanced-0", "worker-frontier-0"} <= set(logs)
    for name, text in logs.items():
        assert API_KEY not in text, f"API key in the log of {name}"
        assert SASL_PASSWORD not in text, f"SASL password in the log of {name}"
        assert marker not in text, f"prompt text in the log of {name}"
    records = await read_topic(settings, [topics.deadletter, topics.responses])
    assert any(r.topic == topics.deadletter for r in records)
    for record in records:
        assert API_KEY.encode() not in (record.value or b"")
        assert SASL_PASSWORD.encode() not in (record.value or b"")
    assert SASL_PASSWORD not in sasl_broker.log_file.read_text(errors="replace")
    # The settings file the children read holds the secrets: owner-only.
    assert stat.S_IMODE(stack.config_file.stat().st_mode) == 0o600


async def _traffic(settings: Settings, client: RouterClient, marker: str) -> None:
    topics = settings.topics
    ok = make_request(messages=[ChatMessage(role="user", content=f"Hours? {marker}")])
    await asyncio.wait_for(client.submit(ok), 60)
    await client.result(ok.id, timeout_s=120)
    # To the frontier, which answers 401: a dead letter carrying the attempt's error.
    refused = make_request(
        forced_tier="frontier",
        messages=[ChatMessage(role="user", content=f"Prove it. {marker}")],
    )
    await asyncio.wait_for(client.submit(refused), 60)
    with pytest.raises(RequestDeadLettered) as caught:
        await client.result(refused.id, timeout_s=120)
    assert caught.value.dead_letter.attempts
    # Bad input with the marker in it: dead-lettered, and its text not logged.
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings.kafka), acks="all")
    await asyncio.wait_for(producer.start(), 30)
    try:
        bad = encode(make_request(messages=[ChatMessage(role="user", content=marker)]))
        bad = bad.replace(b'"turn":1', b'"turn":"' + marker.encode() + b'"')
        await asyncio.wait_for(producer.send_and_wait(topics.requests, bad), 30)
        await asyncio.wait_for(producer.send_and_wait(topics.requests, marker.encode()), 30)
    finally:
        await producer.stop()
    for number in range(10):
        request = make_request(messages=[ChatMessage(role="user", content=f"{number} {marker}")])
        await asyncio.wait_for(client.submit(request), 60)
        await client.result(request.id, timeout_s=120)
