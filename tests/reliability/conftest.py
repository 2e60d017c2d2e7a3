"""Fixtures of the reliability scenarios: local model servers per tier and the stack settings.

The broker fixtures (``kafka_broker``, ``make_settings``, ``created_topics``, ``make_broker``)
come from ``tests/conftest.py``; the harness (processes, load, faults, counting) is
``bench/harness.py``, shared with ``bench/bench_faults.py``.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# As in tests/workers/conftest.py: the project root must win over tests/workers, which
# pytest would otherwise find as a namespace package named ``workers``.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
if getattr(sys.modules.get("workers"), "__file__", "") is None:
    del sys.modules["workers"]

from reliability_helpers import (  # noqa: E402
    SASL_SSL_MECHANISMS,
    SASL_USERS,
    make_tls_files,
)

from bench.harness import Stack, tier_overrides  # noqa: E402
from deploy.broker import KafkaBroker, SaslListener  # noqa: E402
from schemas.settings import Settings, TopicSettings  # noqa: E402
from tests.conftest import broker_settings, free_port  # noqa: E402
from workers.testing import ModelServer  # noqa: E402


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(CA certificate, broker PEM keystore) made for this module's SASL_SSL listener."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def sasl_broker(
    tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path]
) -> Iterator[KafkaBroker]:
    """A broker of this module's own with a SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256)
    and a SASL_SSL listener (PLAIN, SCRAM-SHA-512; its CA is ``tls_files[0]``)."""
    settings = broker_settings(tmp_path_factory.mktemp("sasl-kafka"))
    ports: list[int] = []
    while len(ports) < 2:
        port = free_port()
        if port not in (settings.port, settings.controller_port, *ports):
            ports.append(port)
    broker = KafkaBroker(
        settings,
        die_with_parent=True,
        sasl=[
            SaslListener(port=ports[0], users=SASL_USERS, mechanisms=("PLAIN", "SCRAM-SHA-256")),
            SaslListener(
                port=ports[1], users=SASL_USERS, mechanisms=SASL_SSL_MECHANISMS,
                keystore=tls_files[1],
            ),
        ],
    )
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def stack_settings(
    make_settings: Callable[..., Settings],
    created_topics: TopicSettings,
    model_servers: dict[str, ModelServer],
) -> Callable[..., Settings]:
    """``stack_settings(**overrides)``: Settings for the child processes of one test.

    The topics exist (on the session broker); tiers call this test's model servers; the
    router and worker groups are this test's own; the router's metrics port is free and
    its Faust web server off.
    """

    def make(**overrides: Any) -> Settings:
        router: dict[str, Any] = {
            "app_id": f"rel-{uuid.uuid4().hex[:8]}",
            "metrics_port": free_port(),
            "web_port": 0,
        }
        router.update(overrides.pop("router", {}))
        workers: dict[str, Any] = {"shutdown_grace_s": 3.0, "commit_interval_ms": 200}
        workers.update(overrides.pop("workers", {}))
        tiers = tier_overrides(model_servers)
        for tier, values in overrides.pop("tiers", {}).items():
            tiers.setdefault(tier, {}).update(values)
        return make_settings(router=router, workers=workers, tiers=tiers, **overrides)

    return make


@pytest.fixture
async def stacks(tmp_path: Path) -> AsyncIterator[Callable[..., Stack]]:
    """Factory of :class:`Stack` objects; every child of every stack is killed at teardown."""
    made: list[Stack] = []

    def make(settings: Settings, **kwargs: Any) -> Stack:
        stack = Stack(settings, run_dir=tmp_path / f"stack-{len(made)}", **kwargs)
        made.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in made:
            stack.kill_all()
