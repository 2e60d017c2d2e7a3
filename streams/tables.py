"""Faust tables whose changelog partition is the Kafka default partitioner's choice for the key.

Faust's ``use_partitioner=True`` asks the *producer* to place each changelog record, and the
aiokafka producer only knows the partitions of topics it has already sent to: the first table
write of a fresh router (before anything went to that changelog) raises ``TypeError`` inside
``partitions_for_topic`` and kills the agent. The router creates its changelog topics with a
known partition count (``topics.partitions``), so :class:`KeyedTable` computes the partition
itself, with the same murmur2 hash as every Kafka client's default partitioner: no metadata
lookup, no race, and a ``conversations`` record still lands in the partition numbered like the
requests of that conversation.
"""

from __future__ import annotations

from typing import Any

import faust
from aiokafka.partitioner import murmur2

__all__ = ["KeyedTable", "default_partition"]


def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class KeyedTable(faust.Table):  # type: ignore[type-arg]
    """A table keyed by ``str`` whose records go to ``default_partition(key, partitions)``."""

    def partition_for_key(self, key: Any) -> int | None:
        # Faust creates the changelog with the table's partitions, else the app's default.
        partitions = self.partitions or self.app.conf.topic_partitions
        raw = key if isinstance(key, bytes) else str(key).encode()
        return default_partition(raw, partitions)
