"""The route policy, rule by rule and in combination (no Kafka)."""

from __future__ import annotations

from typing import Any

import pytest
from router_helpers import fake_score, request

import streams
from schemas.messages import Attempt, ChatMessage, Features, RouteRequest, ScoredRequest
from schemas.settings import CategoryRoute, Settings
from streams import ConversationState, RoutePolicy, UnknownTier, UserStats, compute_features

CHAIN = ("fast", "balanced", "frontier")
NOW = 10_000.0


def policy(**overrides: Any) -> RoutePolicy:
    values: dict[str, Any] = {
        "chain": CHAIN,
        "tier_models": {"fast": "small", "balanced": "coder-0.5b", "frontier": "coder-1.5b"},
        "category_routes": {
            "code": CategoryRoute(tier="balanced", model="code-model"),
            "agent": CategoryRoute(model="tool-model"),
        },
    }
    values.update(overrides)
    return RoutePolicy(**values)


def features(turn: int = 1, outcomes: int = 0, rate: float = 0.0) -> Features:
    return Features(turn=turn, user_outcomes=outcomes, user_uproute_rate=rate)


def conv(tier_index: int, seen_at: float = NOW - 10, turns: int = 1) -> ConversationState:
    return ConversationState(turns=turns, tier_index=tier_index, seen_at=seen_at)


# (id, score, category, confidence, request fields, features, conversation, tier, reason, model)
CASES: list[tuple[Any, ...]] = [
    ("score-fast", 0.1, "general", 0.9, {}, features(), None, "fast", "score", None),
    ("score-boundary-balanced", 0.3, "general", 0.9, {}, features(), None, "balanced", "score",
     None),
    ("score-just-below", 0.2999, "general", 0.9, {}, features(), None, "fast", "score", None),
    ("score-frontier", 0.7, "general", 0.9, {}, features(), None, "frontier", "score", None),
    ("score-one", 1.0, "general", 0.9, {}, features(), None, "frontier", "score", None),
    ("forced-tier", 0.9, "general", 0.9, {"forced_tier": "fast"}, features(), None, "fast",
     "forced", None),
    ("forced-beats-latch", 0.1, "general", 0.9, {"forced_tier": "fast"}, features(turn=9),
     conv(2), "fast", "forced", None),
    ("forced-tier-and-model", 0.1, "general", 0.9,
     {"forced_tier": "balanced", "forced_model": "x"}, features(), None, "balanced", "forced",
     "x"),
    ("forced-model-configured", 0.9, "general", 0.9, {"forced_model": "coder-0.5b"}, features(),
     None, "balanced", "forced", "coder-0.5b"),
    ("forced-model-unknown-goes-last", 0.1, "general", 0.9, {"forced_model": "gpt-x"},
     features(), None, "frontier", "forced", "gpt-x"),
    ("category-pins-tier-and-model", 0.1, "code", 0.9, {}, features(), None, "balanced",
     "category", "code-model"),
    ("category-pin-can-lower", 0.9, "code", 0.9, {}, features(), None, "balanced", "category",
     "code-model"),
    ("category-model-only-keeps-score-tier", 0.8, "agent", 0.9, {}, features(), None,
     "frontier", "category", "tool-model"),
    ("unclear-category-falls-back-to-general", 0.1, "code", 0.3, {}, features(), None, "fast",
     "score", None),
    ("depth-moves-up", 0.1, "general", 0.5, {}, features(turn=4), None, "balanced", "depth",
     None),
    ("depth-before-turn", 0.1, "general", 0.5, {}, features(turn=3), None, "fast", "score",
     None),
    ("depth-confident-stays", 0.1, "general", 0.95, {}, features(turn=6), None, "fast", "score",
     None),
    ("depth-caps-at-last", 0.9, "general", 0.5, {}, features(turn=6), None, "frontier", "score",
     None),
    ("depth-above-pin-drops-model", 0.1, "code", 0.5, {}, features(turn=4), None, "frontier",
     "depth", None),
    ("latch-holds", 0.1, "general", 0.99, {}, features(turn=2), conv(2), "frontier", "latched",
     None),
    ("latch-expired", 0.1, "general", 0.99, {}, features(turn=2), conv(2, seen_at=NOW - 1801),
     "fast", "score", None),
    ("latch-not-needed", 0.9, "general", 0.99, {}, features(turn=2), conv(1), "frontier",
     "score", None),
    ("latch-above-depth", 0.1, "general", 0.5, {}, features(turn=5), conv(2), "frontier",
     "latched", None),
    ("latch-above-pin-drops-model", 0.1, "code", 0.9, {}, features(), conv(2), "frontier",
     "latched", None),
    ("history-borderline-up", 0.25, "general", 0.99, {}, features(outcomes=10, rate=0.6), None,
     "balanced", "history", None),
    ("history-not-borderline", 0.1, "general", 0.99, {}, features(outcomes=10, rate=0.6), None,
     "fast", "score", None),
    ("history-too-few-outcomes", 0.25, "general", 0.99, {}, features(outcomes=4, rate=1.0),
     None, "fast", "score", None),
    ("history-low-rate", 0.25, "general", 0.99, {}, features(outcomes=10, rate=0.4), None,
     "fast", "score", None),
    ("history-then-depth", 0.25, "general", 0.5, {}, features(turn=4, outcomes=10, rate=0.9),
     None, "frontier", "depth", None),
    ("history-at-top-stays", 0.69, "general", 0.99, {}, features(outcomes=10, rate=0.9), None,
     "frontier", "history", None),
]


@pytest.mark.parametrize(
    ("score", "category", "confidence", "fields", "feats", "conversation", "tier", "reason",
     "model"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_route_rules(
    score: float, category: str, confidence: float, fields: dict[str, Any], feats: Features,
    conversation: ConversationState | None, tier: str, reason: str, model: str | None,
) -> None:
    decision = policy().route(
        request("q", **fields), fake_score(score, category, confidence), feats, conversation,
        now=NOW,
    )
    assert (decision.tier, decision.reason, decision.model) == (tier, reason, model)
    assert decision.tier_index == CHAIN.index(tier)
    if reason != "score":
        assert decision.detail


def test_unclear_category_is_recorded_as_general() -> None:
    decision = policy().route(request(), fake_score(0.1, "code", 0.3), features(), now=NOW)
    assert decision.category == "general"


def test_forced_unknown_tier_raises() -> None:
    with pytest.raises(UnknownTier, match="'nope' is not in the chain"):
        policy().route(request(forced_tier="nope"), fake_score(0.1), features(), now=NOW)


def test_from_settings_reads_every_knob() -> None:
    settings = Settings(
        chain=("fast", "frontier"),
        router={"thresholds": (0.5,), "depth_turn": 2, "category_routes": {
            "code": {"tier": "frontier"}}},
    )
    p = RoutePolicy.from_settings(settings)
    assert p.chain == ("fast", "frontier") and p.thresholds == (0.5,)
    assert p.tier_models["fast"] == settings.tiers["fast"].model
    unsure = fake_score(0.4, confidence=0.5)
    assert p.route(request(), unsure, features(turn=2), now=NOW).reason == "depth"
    assert p.route(request(), fake_score(0.1, "code"), features(), now=NOW).tier == "frontier"


def test_policy_rejects_thresholds_not_matching_chain() -> None:
    with pytest.raises(ValueError, match="need 2 thresholds"):
        RoutePolicy(chain=CHAIN, thresholds=(0.5,))


def _scored(tier: str, tried: list[str], **fields: Any) -> ScoredRequest:
    attempts = [Attempt(tier=t, model="m", outcome="timeout") for t in tried]
    return ScoredRequest(request=request(**fields), score=0.1, category="general", tier=tier,
                         reason="score", attempts=attempts)


@pytest.mark.parametrize(
    ("tier", "tried", "cause", "retry", "expected"),
    [
        ("fast", ["fast"], "timeout", False, "balanced"),
        ("balanced", ["fast", "balanced"], "timeout", False, "frontier"),
        ("frontier", ["fast", "balanced", "frontier"], "timeout", False, None),
        ("balanced", ["balanced"], "rejected", False, "frontier"),  # never goes down
        ("frontier", ["frontier"], "timeout", False, None),
        ("fast", ["fast", "balanced"], "timeout", False, "frontier"),  # skip a tried tier
        ("fast", ["fast"], "timeout", True, "fast"),  # retry once
        ("fast", ["fast", "fast"], "timeout", True, "balanced"),  # only once
        ("fast", ["fast"], "rejected", True, "balanced"),  # not retriable
        ("frontier", ["fast", "balanced", "frontier"], "rate_limited", True, "frontier"),
        ("fast", [], "timeout", False, "balanced"),  # attempts missing: the tier counts
        ("fast", ["fast", "balanced", "frontier"] * 2, "timeout", True, None),  # hard bound
        ("unknown", ["unknown"], "timeout", False, "fast"),
    ],
)
def test_next_tier(
    tier: str, tried: list[str], cause: str, retry: bool, expected: str | None
) -> None:
    decision = policy(retry_same_tier=retry).next_tier(_scored(tier, tried), cause)
    assert decision.tier == expected
    assert decision.detail


def test_up_route_chain_never_loops() -> None:
    p = policy(retry_same_tier=True)
    scored = _scored("fast", [])
    visited = []
    for _ in range(20):
        attempt = Attempt(tier=scored.tier, model="m", outcome="timeout")
        scored = scored.model_copy(update={"attempts": [*scored.attempts, attempt]})
        decision = p.next_tier(scored, "timeout")
        if decision.tier is None:
            break
        visited.append(decision.tier)
        scored = scored.model_copy(update={"tier": decision.tier})
    assert visited == ["fast", "balanced", "balanced", "frontier", "frontier"]


def test_state_round_trips_and_tolerates_garbage() -> None:
    state = ConversationState(turns=3, tier_index=1, seen_at=5.0)
    assert ConversationState.from_json(state.to_json()) == state
    assert ConversationState.from_json("junk") == ConversationState()
    assert ConversationState.from_json({"turns": "x"}).turns == 0
    assert state.latched_index(now=6.0, idle_s=10) == 1
    assert state.latched_index(now=16.0, idle_s=10) == -1
    stats = UserStats().record(uproute=True).record(uproute=False)
    assert (stats.outcomes, stats.uproutes, stats.uproute_rate) == (2, 1, 0.5)
    assert UserStats.from_json({"outcomes": 1, "uproutes": 9}).uproutes == 1
    assert UserStats.from_json(None).uproute_rate == 0.0


def test_features() -> None:
    req = RouteRequest(
        user_id="u", conversation_id="c", tools=[{"name": "a"}, {"name": "b"}],
        messages=[
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="user",
                        content="Ship 3 boxes to ACME by 2024-06-01, order-77.\n```\nx = 1\n```"),
        ],
    )
    f = compute_features(req, turn=5, user=UserStats(outcomes=4, uproutes=1))
    assert f.turn == 5 and f.tools == 2 and f.code
    assert f.dates == 1 and f.numbers == 3  # 3, 77 and 1; the date is not a number
    assert f.chars == len("be brief") + len(req.messages[1].content)
    assert 0 < f.entity_density < 1
    assert (f.user_outcomes, f.user_uproute_rate) == (4, 0.25)
    plain = compute_features(request("what are your store hours?"), turn=1)
    assert not plain.code and plain.numbers == 0 and plain.user_outcomes == 0


def test_exports_sorted() -> None:
    assert streams.__all__ == sorted(streams.__all__)
    for name in streams.__all__:
        assert hasattr(streams, name)
