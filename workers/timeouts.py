"""How long one model call may take: the tier's timeout, scaled by score, capped by deadline.

Example::

    total_s = call_timeout_s(settings.tier("fast"), score=0.2, remaining_s=0.3)
    timeout = httpx_timeout(settings.tier("fast"), total_s)
"""

from __future__ import annotations

from datetime import datetime

import httpx

from schemas.messages import utcnow
from schemas.settings import TierSettings

__all__ = ["call_timeout_s", "httpx_timeout", "remaining_s", "tier_timeout_s"]


def tier_timeout_s(tier: TierSettings, score: float) -> float:
    """The tier's timeout, scaled when ``scale_timeout_by_score`` is on.

    Scaled, a request of score 0 gets ``score_timeout_floor × timeout_s`` and a request of
    score 1 the full ``timeout_s``: simple requests give up sooner.
    """
    if not tier.scale_timeout_by_score:
        return tier.timeout_s
    score = min(1.0, max(0.0, score))
    floor = tier.score_timeout_floor
    return tier.timeout_s * (floor + (1.0 - floor) * score)


def remaining_s(deadline: datetime | None, now: datetime | None = None) -> float | None:
    """Seconds left until ``deadline`` (negative once passed); ``None`` without a deadline."""
    if deadline is None:
        return None
    return (deadline - (now or utcnow())).total_seconds()


def call_timeout_s(tier: TierSettings, score: float, remaining: float | None) -> float:
    """``min(tier timeout (scaled by score), time left to the deadline)``, never below 0."""
    timeout = tier_timeout_s(tier, score)
    if remaining is not None:
        timeout = min(timeout, remaining)
    return max(0.0, timeout)


def httpx_timeout(tier: TierSettings, total_s: float) -> httpx.Timeout:
    """An :class:`httpx.Timeout` where no phase may outlast ``total_s``."""
    return httpx.Timeout(
        total_s,
        connect=min(tier.connect_timeout_s, total_s),
        pool=total_s,
    )
