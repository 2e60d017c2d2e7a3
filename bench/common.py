"""What every benchmark needs: free ports and a throwaway broker that dies with it."""

from __future__ import annotations

import socket
from pathlib import Path

from deploy.broker import KafkaBroker
from schemas.settings import BrokerSettings

__all__ = ["bench_broker", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bench_broker(data_dir: Path, *, heap_mb: int = 768) -> KafkaBroker:
    """A single-node broker (not started) on free ports with its data in ``data_dir``.

    It dies with the benchmark process, also when that is killed by a timeout.
    """
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    return KafkaBroker(
        BrokerSettings(data_dir=data_dir, port=port, controller_port=controller_port,
                       heap_mb=heap_mb),
        die_with_parent=True,
    )
