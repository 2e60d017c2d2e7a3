"""What the router remembers between requests: one record per conversation and per user.

Both live in Faust tables (changelog-backed) as plain JSON dicts; these dataclasses are the
typed view the policy reads. Unknown or damaged table values read as the empty state, so a
bad record degrades routing to "no memory" instead of crashing the agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ConversationState", "UserStats"]


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(frozen=True, slots=True)
class ConversationState:
    """A conversation's turn count and the highest tier (chain index) it reached.

    ``seen_at`` is the wall-clock time (epoch seconds) of its last request or answer; the
    latch holds only while ``now - seen_at`` is within ``router.latch_idle_s``.
    """

    turns: int = 0
    tier_index: int = -1
    seen_at: float = 0.0

    @classmethod
    def from_json(cls, raw: Any) -> ConversationState:
        if not isinstance(raw, dict):
            return cls()
        seen_at = raw.get("seen_at", 0.0)
        tier_index = raw.get("tier_index", -1)
        return cls(
            turns=_int(raw, "turns"),
            tier_index=tier_index if isinstance(tier_index, int) else -1,
            seen_at=float(seen_at) if isinstance(seen_at, int | float) else 0.0,
        )

    def to_json(self) -> dict[str, Any]:
        return {"turns": self.turns, "tier_index": self.tier_index, "seen_at": self.seen_at}

    def latched_index(self, now: float, idle_s: float) -> int:
        """The tier index the conversation may not drop below now (-1: none)."""
        if self.tier_index < 0 or now - self.seen_at > idle_s:
            return -1
        return self.tier_index


@dataclass(frozen=True, slots=True)
class UserStats:
    """A user's outcomes on the first tier of the chain.

    ``outcomes`` counts answers and up-routes that happened on the first tier; ``uproutes``
    those that were up-routes (invalid outputs included).
    """

    outcomes: int = 0
    uproutes: int = 0

    @classmethod
    def from_json(cls, raw: Any) -> UserStats:
        if not isinstance(raw, dict):
            return cls()
        outcomes = _int(raw, "outcomes")
        return cls(outcomes=outcomes, uproutes=min(_int(raw, "uproutes"), outcomes))

    def to_json(self) -> dict[str, Any]:
        return {"outcomes": self.outcomes, "uproutes": self.uproutes}

    @property
    def uproute_rate(self) -> float:
        return self.uproutes / self.outcomes if self.outcomes else 0.0

    def record(self, *, uproute: bool) -> UserStats:
        return UserStats(self.outcomes + 1, self.uproutes + (1 if uproute else 0))
