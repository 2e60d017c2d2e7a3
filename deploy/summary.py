"""What happened to the traffic: shares per tier and category, latency, up-routes, cost.

Built from the responses and dead letters a run produced; `llm-router up` prints it at the end
and `llm-router stats` rebuilds it from the topics.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Group
from rich.table import Table

from schemas.messages import DeadLetter, RouteResponse
from schemas.settings import Settings

__all__ = ["RouteSummary", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class RouteSummary:
    """Accumulates final outcomes; duplicates (same request id) count once."""

    settings: Settings
    responses: dict[str, RouteResponse] = field(default_factory=dict)
    dead_letters: dict[str, DeadLetter] = field(default_factory=dict)
    duplicates: int = 0

    def add(self, outcome: RouteResponse | DeadLetter) -> None:
        if isinstance(outcome, RouteResponse):
            key = outcome.request_id
            if key in self.responses:
                self.duplicates += 1
            self.responses[key] = outcome
        else:
            key = outcome.request_id or f"{outcome.source_topic}:{outcome.source_offset}"
            if key in self.dead_letters:
                self.duplicates += 1
            self.dead_letters[key] = outcome

    @property
    def total(self) -> int:
        return len(self.responses) + len(self.dead_letters)

    def tier_counts(self) -> Counter[str]:
        return Counter(r.route.tier for r in self.responses.values())

    def uproutes_by_cause(self) -> Counter[str]:
        causes: Counter[str] = Counter()
        for attempts in [r.route.attempts for r in self.responses.values()] + [
            d.attempts for d in self.dead_letters.values()
        ]:
            causes.update(a.outcome for a in attempts if a.outcome != "ok")
        return causes

    def cost(self) -> tuple[float, float]:
        """(actual cost, cost had every answer come from the last tier of the chain)."""
        top = self.settings.tier(self.settings.chain[-1])
        actual = sum(r.cost_usd for r in self.responses.values())
        baseline = sum(
            r.usage.input_tokens * top.price_input_per_mtok / 1e6
            + r.usage.output_tokens * top.price_output_per_mtok / 1e6
            for r in self.responses.values()
        )
        return actual, baseline

    def render(self) -> Group:
        answered = len(self.responses)
        tiers = Table(title=f"answered {answered}, dead-lettered {len(self.dead_letters)}")
        for column in ("tier", "share", "answers", "p50 ms", "p95 ms", "tokens", "cost $"):
            tiers.add_column(column, justify="right" if column != "tier" else "left")
        latency: dict[str, list[float]] = defaultdict(list)
        tokens: Counter[str] = Counter()
        cost: dict[str, float] = defaultdict(float)
        for response in self.responses.values():
            tier = response.route.tier
            latency[tier].append(response.route.total_latency_ms)
            tokens[tier] += response.usage.total_tokens
            cost[tier] += response.cost_usd
        counts = self.tier_counts()
        for tier in self.settings.chain:
            tiers.add_row(
                tier,
                f"{counts[tier] / answered:.0%}" if answered else "-",
                str(counts[tier]),
                f"{percentile(latency[tier], 50):.0f}",
                f"{percentile(latency[tier], 95):.0f}",
                str(tokens[tier]),
                f"{cost[tier]:.6f}",
            )
        categories = Table(title="categories")
        categories.add_column("category")
        categories.add_column("answers", justify="right")
        categories.add_column("tiers", justify="left")
        by_category: dict[str, Counter[str]] = defaultdict(Counter)
        for response in self.responses.values():
            by_category[response.route.category][response.route.tier] += 1
        for category, per_tier in sorted(by_category.items()):
            categories.add_row(
                category,
                str(sum(per_tier.values())),
                ", ".join(f"{t} {n}" for t, n in per_tier.most_common()),
            )
        failures = Table(title="up-routes and dead letters by cause")
        failures.add_column("kind")
        failures.add_column("cause")
        failures.add_column("count", justify="right")
        for cause, count in sorted(self.uproutes_by_cause().items()):
            failures.add_row("attempt failed", cause, str(count))
        for cause, count in sorted(
            Counter(f"{d.stage}/{d.error_kind}" for d in self.dead_letters.values()).items()
        ):
            failures.add_row("dead letter", cause, str(count))
        if not failures.row_count:
            failures.add_row("-", "none", "0")
        actual, baseline = self.cost()
        saving = f"{1 - actual / baseline:.0%}" if baseline else "-"
        money = Table(title="cost")
        money.add_column("routed $", justify="right")
        money.add_column(f"all-{self.settings.chain[-1]} $", justify="right")
        money.add_column("saving", justify="right")
        money.add_row(f"{actual:.6f}", f"{baseline:.6f}", saving)
        return Group(tiers, categories, failures, money)
