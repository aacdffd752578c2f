"""The seed report's six claims, each set beside the measured figures with a verdict.

The claims are quoted from ``BACKEND_OPTIMIZATION_REPORT.md`` ("Performance Metrics").
Each is tested on its headline: the improvement it states where it states one (memory
-67%, creation -75%), else the level it states for "after" (failures under 1%, a hit
rate of 85%, pool efficiency 78%, 0 leaking components). The rule, printed by every
report (:data:`RULE`):

- **confirmed**: the whole 95% interval of the measured figure is at least as good as
  the claim;
- **refuted**: the whole interval is worse than the claim;
- **inconclusive**: the interval contains the claimed figure, or a profile did not
  measure it.

A figure measured once (peak RSS, pool efficiency) is its own interval. Whether the
claimed "before" matches what legacy measures is shown beside it, for the record: the
verdict is about the claimed effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sixty_core.harness.metrics import NO_CACHE_LOOKUPS, Metric

CONFIRMED = "confirmed"
REFUTED = "refuted"
INCONCLUSIVE = "inconclusive"

RULE = (
    "Each claim is tested on its headline: the improvement it states (memory -67%, "
    "creation time -75%) or, where it states a level, the level after (failures < 1%, "
    "hit rate 85%, pool efficiency 78%, 0 leaking components). Confirmed: the whole 95% "
    "interval of the measured figure is at least as good as the claim. Refuted: the whole "
    "interval is worse. Inconclusive: the interval contains the claimed figure, or a "
    "profile did not measure it. A figure measured once is its own interval."
)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Claim:
    metric: str
    label: str
    claimed_before: str
    claimed_after: str
    claimed_effect: str
    #: What is tested, in words.
    test: str
    #: Whether a measured "before" is what the claim says it was.
    before_matches: Callable[[float], bool]
    #: The tested figure (an interval) from the measured before and after.
    tested: Callable[[Metric, Metric], Interval | None]
    #: The claimed figure the tested one is held to, and whether higher is better.
    threshold: float
    higher_is_better: bool

    @property
    def is_reduction(self) -> bool:
        """Whether the claim states an improvement (else a level after)."""
        return self.tested is _reduction


def _interval(m: Metric) -> Interval | None:
    if m.value is None or m.low is None or m.high is None:
        return None
    return Interval(m.value, m.low, m.high)


def _after(_before: Metric, after: Metric) -> Interval | None:
    return _interval(after)


def _reduction(before: Metric, after: Metric) -> Interval | None:
    """1 - after/before with the widest interval the two intervals allow."""
    b, a = _interval(before), _interval(after)
    if b is None or a is None or b.value <= 0 or b.low <= 0:
        return None
    return Interval(1 - a.value / b.value, 1 - a.high / b.low, 1 - a.low / b.high)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "memory_peak_mb",
        "Memory usage (peak)",
        "~180 MB peak",
        "~60 MB peak",
        "67% reduction",
        "peak RSS falls by at least 67%",
        lambda mb: 150 <= mb <= 210,
        _reduction,
        0.67,
        True,
    ),
    Claim(
        "api_failure_rate",
        "API failures",
        "15% failure rate",
        "<1% failure rate",
        "95% improvement",
        "optimized failure rate below 1%",
        lambda rate: 0.12 <= rate <= 0.18,
        _after,
        0.01,
        False,
    ),
    Claim(
        "deal_create_ms.p50",
        "Deal creation time (p50)",
        "3-8 seconds",
        "0.8-1.2 seconds",
        "75% faster",
        "median create time falls by at least 75%",
        lambda ms: 3000 <= ms <= 8000,
        _reduction,
        0.75,
        True,
    ),
    Claim(
        "cache_hit_rate",
        "Cache hit rate",
        "0% (no cache)",
        "85% average",
        "new capability",
        "optimized hit rate at least 85%",
        lambda rate: rate == 0,
        _after,
        0.85,
        True,
    ),
    Claim(
        "pool_efficiency",
        "Connection pool efficiency",
        "45% efficiency",
        "78% efficiency",
        "73% improvement",
        "optimized pool efficiency at least 78%",
        lambda rate: 0.40 <= rate <= 0.50,
        _after,
        0.78,
        True,
    ),
    Claim(
        "leaking_components",
        "Memory leaks",
        "12 components affected",
        "0 components affected",
        "100% resolved",
        "optimized has 0 leaking components",
        lambda count: count == 12,
        _after,
        0.0,
        False,
    ),
)


@dataclass(frozen=True)
class ClaimRow:
    claim: Claim
    before: Metric
    after: Metric
    tested: Interval | None
    verdict: str
    #: Whether legacy's measured figure is the claimed "before" (None: not measured).
    before_matches: bool | None


def verdict(claim: Claim, tested: Interval | None) -> str:
    if tested is None:
        return INCONCLUSIVE
    t = claim.threshold
    if claim.higher_is_better:
        if tested.low >= t:
            return CONFIRMED
        return REFUTED if tested.high < t else INCONCLUSIVE
    # Lower is better: an "at most" (exact 0 for leaks, "< 1%" for failures).
    if claim.metric == "leaking_components":
        return CONFIRMED if tested.value == 0 else REFUTED
    if tested.high < t:
        return CONFIRMED
    return REFUTED if tested.low >= t else INCONCLUSIVE


def evaluate(
    metrics: dict[str, Metric], before_profile: str = "legacy", after_profile: str = "optimized"
) -> list[ClaimRow]:
    """One row per claim, from the two profiles' metrics (missing ones inconclusive)."""
    rows: list[ClaimRow] = []
    for claim in CLAIMS:
        before = metrics.get(f"{before_profile}.{claim.metric}") or _missing(
            before_profile, claim.metric
        )
        after = metrics.get(f"{after_profile}.{claim.metric}") or _missing(
            after_profile, claim.metric
        )
        tested = claim.tested(before, after)
        before_value = before.value
        if claim.metric == "cache_hit_rate" and before.source == NO_CACHE_LOOKUPS:
            # A load run without a single cache lookup is the claimed "0% (no cache)".
            before_value = 0.0
        rows.append(
            ClaimRow(
                claim=claim,
                before=before,
                after=after,
                tested=tested,
                verdict=verdict(claim, tested),
                before_matches=None if before_value is None else claim.before_matches(before_value),
            )
        )
    return rows


def _missing(profile: str, metric: str) -> Metric:
    return Metric(f"{profile}.{metric}", None, None, None, "", False, True, "")
