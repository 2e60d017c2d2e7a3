"""The route policy: which tier (and model) answers a request, and where a failure goes next.

Pure functions of the request, its score, its features and the remembered state; no I/O, so
every rule can be tested from a table of cases.

Route rules, in the order they apply (each later rule may only move the tier *up*, except
a category pin, which sets it):

1. ``forced``   ``forced_tier`` (and/or ``forced_model``) wins over everything else. A
   ``forced_model`` without a tier goes to the first tier of the chain whose configured model
   is that model, else to the last tier (the most capable endpoint).
2. ``score``    the complexity score picks the tier: ``thresholds`` split [0, 1] into one
   interval per tier of the chain (defaults: fast < 0.3 <= balanced < 0.7 <= frontier).
3. ``history``  a user whose first-tier outcomes show many up-routes (at least
   ``history_min_outcomes`` outcomes, up-route share >= ``history_uproute_rate``) is moved
   up one tier when the score is within ``history_margin`` below the next threshold.
4. ``category`` a category with low confidence (top probability below
   ``min_category_confidence``) counts as ``general``; a ``category_routes`` entry pins its
   tier and/or model.
5. ``depth``    from turn ``depth_turn`` on, a conversation moves up one tier unless the
   classifier's confidence is at least ``depth_confidence``.
6. ``latched``  a conversation never drops below the highest tier it reached while it has
   been active within ``latch_idle_s``.

A model pinned by a category route belongs to its tier: when depth or the latch then moves
the request to a higher tier, the pin's model is dropped and the tier's own model answers.

Up-route rule: the next tier *after* the failed one in the chain that has not been tried
for this request; with ``retry_same_tier`` a retriable failure (timeout, rate limit, upstream
error) may try the same tier once more. Attempts are bounded by the chain, so it never loops.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from schemas.messages import Features, RouteReason, RouteRequest, ScoredRequest
from schemas.settings import CategoryRoute, Settings
from streams.state import ConversationState

__all__ = [
    "FALLBACK_CATEGORY",
    "Decision",
    "RoutePolicy",
    "ScoreLike",
    "UnknownTier",
    "UpRouteDecision",
]

FALLBACK_CATEGORY = "general"
_RETRIABLE_CAUSES = frozenset({"timeout", "rate_limited", "upstream_error"})


class ScoreLike(Protocol):
    """What the policy reads of a classifier score (``classifier_onnx.Score`` fits)."""

    @property
    def complexity(self) -> float: ...
    @property
    def category(self) -> str: ...
    @property
    def probabilities(self) -> Mapping[str, float]: ...
    @property
    def confidence(self) -> float: ...


class UnknownTier(ValueError):
    """A request forced a tier that is not in the chain."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes and why."""

    tier: str
    tier_index: int
    model: str | None
    reason: RouteReason
    category: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class UpRouteDecision:
    """Where a failed request goes next: ``tier`` None means the chain is exhausted."""

    tier: str | None
    detail: str


@dataclass(frozen=True)
class RoutePolicy:
    """The route rules for one chain of tiers; build it with :meth:`from_settings`.

    >>> policy = RoutePolicy(chain=("fast", "balanced", "frontier"))
    >>> policy.tier_for_score(0.5)
    1
    """

    chain: tuple[str, ...]
    thresholds: tuple[float, ...] = (0.3, 0.7)
    tier_models: Mapping[str, str] = field(default_factory=dict)
    category_routes: Mapping[str, CategoryRoute] = field(default_factory=dict)
    min_category_confidence: float = 0.45
    depth_turn: int = 4
    depth_confidence: float = 0.9
    latch_idle_s: float = 1800.0
    history_min_outcomes: int = 5
    history_uproute_rate: float = 0.5
    history_margin: float = 0.1
    retry_same_tier: bool = False

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("the chain needs at least one tier")
        if len(self.thresholds) != len(self.chain) - 1:
            raise ValueError(
                f"{len(self.chain)} tiers need {len(self.chain) - 1} thresholds, "
                f"got {list(self.thresholds)}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutePolicy:
        r = settings.router
        return cls(
            chain=settings.chain,
            thresholds=r.thresholds,
            tier_models={name: settings.tier(name).model for name in settings.chain},
            category_routes=dict(r.category_routes),
            min_category_confidence=r.min_category_confidence,
            depth_turn=r.depth_turn,
            depth_confidence=r.depth_confidence,
            latch_idle_s=r.latch_idle_s,
            history_min_outcomes=r.history_min_outcomes,
            history_uproute_rate=r.history_uproute_rate,
            history_margin=r.history_margin,
            retry_same_tier=r.retry_same_tier,
        )

    # -- route -------------------------------------------------------------------------

    def tier_for_score(self, score: float) -> int:
        """Chain index of the tier whose score interval holds ``score``."""
        return bisect_right(self.thresholds, score)

    def category_of(self, score: ScoreLike) -> str:
        """The category the route uses: the classifier's, or ``general`` when unclear."""
        if score.confidence < self.min_category_confidence:
            return FALLBACK_CATEGORY
        return score.category

    def route(
        self,
        request: RouteRequest,
        score: ScoreLike,
        features: Features,
        conversation: ConversationState | None = None,
        *,
        now: float,
    ) -> Decision:
        """Apply the rules (see the module docstring) and say which one decided."""
        category = self.category_of(score)
        forced = self._forced(request, category)
        if forced is not None:
            return forced

        index = self.tier_for_score(score.complexity)
        reason: RouteReason = "score"
        model: str | None = None
        notes: list[str] = []

        if self._history_pushes(score.complexity, index, features):
            index += 1
            reason = "history"
            notes.append(
                f"user up-route rate {features.user_uproute_rate:.2f} over "
                f"{features.user_outcomes} outcomes"
            )

        pin = self.category_routes.get(category)
        pinned_index = -1
        if pin is not None and (pin.tier is not None or pin.model is not None):
            if pin.tier is not None:
                index = pinned_index = self.chain.index(pin.tier)
            model = pin.model
            reason = "category"
            notes.append(f"category {category!r} routes to {pin.tier or 'any tier'}"
                         + (f" with model {pin.model!r}" if pin.model else ""))

        last = len(self.chain) - 1
        if (
            features.turn >= self.depth_turn
            and score.confidence < self.depth_confidence
            and index < last
        ):
            index += 1
            reason = "depth"
            notes.append(
                f"turn {features.turn} with confidence {score.confidence:.2f} "
                f"< {self.depth_confidence}"
            )

        if conversation is not None:
            latched = min(conversation.latched_index(now, self.latch_idle_s), last)
            if latched > index:
                index = latched
                reason = "latched"
                notes.append(f"conversation reached {self.chain[latched]}")

        if pinned_index >= 0 and index != pinned_index and model is not None:
            notes.append(f"model {model!r} dropped above {self.chain[pinned_index]}")
            model = None
        return Decision(
            tier=self.chain[index],
            tier_index=index,
            model=model,
            reason=reason,
            category=category,
            detail="; ".join(notes) or None,
        )

    def _forced(self, request: RouteRequest, category: str) -> Decision | None:
        if request.forced_tier is not None:
            if request.forced_tier not in self.chain:
                raise UnknownTier(
                    f"forced_tier {request.forced_tier!r} is not in the chain {list(self.chain)}"
                )
            index = self.chain.index(request.forced_tier)
            return Decision(
                tier=request.forced_tier,
                tier_index=index,
                model=request.forced_model,
                reason="forced",
                category=category,
                detail="forced tier",
            )
        if request.forced_model is not None:
            serving = [i for i, t in enumerate(self.chain)
                       if self.tier_models.get(t) == request.forced_model]
            index = serving[0] if serving else len(self.chain) - 1
            how = "configured for" if serving else "not configured on any tier; sent to the last"
            return Decision(
                tier=self.chain[index],
                tier_index=index,
                model=request.forced_model,
                reason="forced",
                category=category,
                detail=f"forced model {request.forced_model!r} {how} tier",
            )
        return None

    def _history_pushes(self, score: float, index: int, features: Features) -> bool:
        if index >= len(self.chain) - 1 or features.user_outcomes < self.history_min_outcomes:
            return False
        if features.user_uproute_rate < self.history_uproute_rate:
            return False
        return score >= self.thresholds[index] - self.history_margin

    # -- up-route ----------------------------------------------------------------------

    def next_tier(self, scored: ScoredRequest, cause: str) -> UpRouteDecision:
        """The tier a failed request tries next, or ``tier=None`` when the chain is exhausted.

        ``scored.attempts`` must include the failed attempt (workers append it).
        """
        tried = [a.tier for a in scored.attempts] or [scored.tier]
        failed = scored.tier
        where = self.chain.index(failed) if failed in self.chain else -1
        # Bounded whatever the attempt list says: never more than two tries per tier.
        if len(tried) >= 2 * len(self.chain):
            return UpRouteDecision(None, f"{len(tried)} attempts: the bound is reached")
        if (
            self.retry_same_tier
            and cause in _RETRIABLE_CAUSES
            and failed in self.chain
            and tried.count(failed) < 2
        ):
            return UpRouteDecision(failed, f"{cause} on {failed}: retrying {failed} once")
        for tier in self.chain[where + 1:]:
            if tier not in tried:
                return UpRouteDecision(tier, f"{cause} on {failed}: up-routed to {tier}")
        return UpRouteDecision(
            None, f"{cause} on {failed}: no untried tier after it in {list(self.chain)}"
        )

    def is_last(self, tier: str) -> bool:
        return tier == self.chain[-1]
