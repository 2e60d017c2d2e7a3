"""The router stream: score requests, pick their tier, up-route failures.

>>> from streams import RoutePolicy
>>> RoutePolicy(chain=("fast", "balanced", "frontier")).tier_for_score(0.8)
2

The Faust app is built by :func:`build_app` (nothing runs at import time); the route rules
live in :mod:`streams.policy`.
"""

from streams.app import FaustSink, RouterApp, build_app, record_of, run_router, running
from streams.features import compute_features
from streams.metrics import RouterMetrics
from streams.outcomes import Outcome, OutcomeFeed, OutcomeLedger
from streams.policy import (
    FALLBACK_CATEGORY,
    Decision,
    RoutePolicy,
    ScoreLike,
    UnknownTier,
    UpRouteDecision,
)
from streams.scorer import ScorerProtocol, load_scorer, render
from streams.scoring import RouterState, ScoringStage
from streams.state import ConversationState, UserStats
from streams.topics import Record, Sink, dead_letter, normalize_headers
from streams.uproute import UpRouteStage

__all__ = [
    "ConversationState",
    "Decision",
    "FALLBACK_CATEGORY",
    "FaustSink",
    "Outcome",
    "OutcomeFeed",
    "OutcomeLedger",
    "Record",
    "RoutePolicy",
    "RouterApp",
    "RouterMetrics",
    "RouterState",
    "ScoreLike",
    "ScorerProtocol",
    "ScoringStage",
    "Sink",
    "UnknownTier",
    "UpRouteDecision",
    "UpRouteStage",
    "UserStats",
    "build_app",
    "compute_features",
    "dead_letter",
    "load_scorer",
    "normalize_headers",
    "record_of",
    "render",
    "run_router",
    "running",
]
