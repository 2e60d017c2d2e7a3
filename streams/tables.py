"""Faust tables whose changelog partition is the Kafka default partitioner's choice for the key.

Faust's ``use_partitioner=True`` asks the *producer* to place each changelog record, and the
aiokafka producer only knows the partitions of topics it has already sent to: the first table
write of a fresh router (before anything went to that changelog) raises ``TypeError`` inside
``partitions_for_topic`` and kills the agent. The router creates its changelog topics with a
known partition count (``topics.partitions``), so :class:`KeyedTable` computes the partition
itself, with the same murmur2 hash as every Kafka client's default partitioner: no metadata
lookup, no race, and a ``conversations`` record still lands in the partition numbered like the
requests of that conversation.

:class:`KeyedGlobalTable` is the same placement for a table every replica reads whole: see
its docstring for how Faust's global tables really behave and what this one adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import faust
from aiokafka.partitioner import murmur2

__all__ = ["KeyedGlobalTable", "KeyedTable", "default_partition"]


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


class KeyedGlobalTable(KeyedTable):
    """A :class:`KeyedTable` that every replica holds whole and keeps reading (a Faust global
    table), for state one replica writes and all of them read.

    What Faust (faust-streaming) does with a global table, and why the options are set here:

    * its assignor gives every member all changelog partitions as *actives*, so each replica
      recovers the whole table before it serves; with ``use_partitioner`` (set by
      :class:`KeyedTable`) all of them are *standbys* too, and after recovery Faust keeps
      reading them (they share each fetch request with the request partitions, as any
      assigned partition does, and delay them by nothing measurable: deploy/README.md,
      "Router state");
    * those records reach the table through the recovery buffers of the *active* partitions,
      applied once ``recovery_buffer_size`` of them have gathered (1,000 by default, and
      ``app.GlobalTable`` only lowers ``standby_buffer_size``): with 1 each record is
      applied as it arrives;
    * the replica that writes a key reads its own records back a little later. A record older
      than the value it has since written would undo that write until the next record comes,
      and a read-modify-write in between would lose an update. ``version`` orders the values
      of a key (it must grow with every write of a single writer); a changelog record whose
      version is below the value already held is skipped.

    Example::

        users = KeyedGlobalTable(app, name="users", version=lambda v: v["outcomes"], ...)
    """

    def __init__(self, app: faust.App, *, version: Callable[[Any], int], **kwargs: Any) -> None:
        kwargs.update(is_global=True, use_partitioner=True, recovery_buffer_size=1,
                      standby_buffer_size=1)
        super().__init__(app, **kwargs)
        self._version = version

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        held: dict[Any, int] = {}
        fresh = []
        for event in batch:
            key = self._to_key(event.key)
            if event.message.value is None:  # a deletion always applies
                held[key] = -1
                fresh.append(event)
                continue
            if key not in held:
                current = self.data.get(key)
                held[key] = -1 if current is None else self._version(current)
            version = self._version(event.value)
            if version < held[key]:
                continue
            held[key] = version
            fresh.append(event)
        super().apply_changelog_batch(fresh)
