"""Which offset of a partition may be committed, and which requests were answered lately.

:class:`OffsetTracker` makes at-least-once hold with many messages of one partition in
flight at once: the committable offset is the lowest offset still in flight (or one past the
highest seen when none is), so a commit never skips a message whose outcome is not yet
published, however the calls finish.

Example::

    tracker = OffsetTracker()
    tracker.add(10); tracker.add(11); tracker.add(12)
    tracker.done(11); tracker.done(12)
    tracker.committable()  # -> 10: offset 10 is still in flight
    tracker.done(10)
    tracker.committable()  # -> 13
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["OffsetTracker", "RecentIds"]


class OffsetTracker:
    """Offsets of one partition: in flight, and the next one to commit."""

    __slots__ = ("_pending", "_next")

    def __init__(self) -> None:
        # Offsets arrive in ascending order per partition, so this dict's first key is always
        # the lowest offset in flight.
        self._pending: dict[int, None] = {}
        self._next: int | None = None

    def add(self, offset: int) -> None:
        """An offset was received and is now in flight."""
        self._pending[offset] = None
        if self._next is None or offset >= self._next:
            self._next = offset + 1

    def done(self, offset: int) -> None:
        """The outcome of ``offset`` is published."""
        self._pending.pop(offset, None)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def committable(self) -> int | None:
        """The offset to commit (the next one to read), or ``None`` if nothing was seen."""
        if self._pending:
            return next(iter(self._pending))
        return self._next


class RecentIds:
    """A bounded set of recently seen keys, oldest evicted first (``maxsize`` 0 keeps none)."""

    __slots__ = ("_keys", "_maxsize")

    def __init__(self, maxsize: int) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._maxsize = maxsize

    def add(self, key: str) -> None:
        if self._maxsize <= 0:
            return
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._maxsize:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
