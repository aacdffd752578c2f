"""Exact statistics of raw samples: percentiles from every sample (never from a histogram),
with seeded bootstrap confidence intervals, and failure rates with Wilson intervals.

Percentiles use linear interpolation between order statistics (Hyndman and Fan type 7,
numpy's default), so ``p50`` of ``[1, 2, 3, 4]`` is 2.5. Locust's own figures round
response times into buckets and can report a p99 above the maximum (its issues #331,
#1563); these cannot.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import msgspec
import numpy as np

from sixty_core.load.samples import ACTION, Sample

PERCENTILES = (50.0, 95.0, 99.0)
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
#: Largest resample block held in memory at once (values), about 40 MB of float64.
_BLOCK_VALUES = 5_000_000


class Estimate(msgspec.Struct, frozen=True):
    """A figure and its confidence interval (equal to the figure when too few samples)."""

    value: float
    low: float
    high: float


class EndpointStats(msgspec.Struct):
    """One endpoint (Locust's name) or one user action, over a run."""

    name: str
    kind: str
    requests: int
    failures: int
    failure_reasons: dict[str, int]
    p50_ms: Estimate | None
    p95_ms: Estimate | None
    p99_ms: Estimate | None
    mean_ms: float | None
    max_ms: float | None
    rps: float
    bytes: int


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation; ValueError
    when there are none."""
    if len(values) == 0:
        raise ValueError("no values to take a percentile of")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def bootstrap_percentile(
    values: Sequence[float] | np.ndarray,
    q: float,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """The ``q``-th percentile with a percentile-bootstrap interval: ``resamples`` draws
    with replacement, seeded, so the same samples always give the same interval."""
    data = np.asarray(values, dtype=np.float64)
    point = percentile(data, q)
    n = len(data)
    if n < 2:
        return Estimate(point, point, point)
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _BLOCK_VALUES // n))
    estimates: list[np.ndarray] = []
    left = resamples
    while left > 0:
        size = min(block, left)
        picks = data[rng.integers(0, n, size=(size, n))]
        estimates.append(np.percentile(picks, q, axis=1))
        left -= size
    alpha = (1 - confidence) / 2
    spread = np.concatenate(estimates)
    low, high = np.quantile(spread, [alpha, 1 - alpha])
    return Estimate(point, float(low), float(high))


def wilson_interval(failures: int, total: int, confidence: float = CONFIDENCE) -> Estimate:
    """``failures / total`` with the Wilson score interval (sound near 0 and 1, where a
    failure rate usually lives); all zeros when ``total`` is 0."""
    if total == 0:
        return Estimate(0.0, 0.0, 0.0)
    z = _normal_quantile(1 - (1 - confidence) / 2)
    p = failures / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # At 0 or all failures a bound is exactly 0 or 1; rounding would leave 1e-19.
    low = 0.0 if failures == 0 else max(0.0, centre - margin)
    high = 1.0 if failures == total else min(1.0, centre + margin)
    return Estimate(p, low, high)


def _normal_quantile(p: float) -> float:
    # statistics.NormalDist is exact enough and in the standard library.
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def endpoint_stats(
    name: str, kind: str, samples: Sequence[Sample], window_s: float, *, seed: int = 0
) -> EndpointStats:
    """Figures for one endpoint's ``samples`` over a run window of ``window_s`` seconds."""
    latencies = np.fromiter((s.ms for s in samples), dtype=np.float64, count=len(samples))
    reasons = Counter(s.reason or "unknown" for s in samples if not s.ok)
    quantiles: list[Estimate | None] = [None, None, None]
    if len(latencies):
        quantiles = [bootstrap_percentile(latencies, q, seed=seed) for q in PERCENTILES]
    return EndpointStats(
        name=name,
        kind=kind,
        requests=len(samples),
        failures=sum(reasons.values()),
        failure_reasons=dict(reasons.most_common()),
        p50_ms=quantiles[0],
        p95_ms=quantiles[1],
        p99_ms=quantiles[2],
        mean_ms=float(latencies.mean()) if len(latencies) else None,
        max_ms=float(latencies.max()) if len(latencies) else None,
        rps=len(samples) / window_s if window_s > 0 else 0.0,
        bytes=sum(s.bytes for s in samples),
    )


def by_endpoint(samples: Sequence[Sample], window_s: float) -> list[EndpointStats]:
    """:func:`endpoint_stats` per (kind, name), requests first, busiest first."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.kind, sample.name), []).append(sample)
    ordered = sorted(groups.items(), key=lambda item: (item[0][0] == ACTION, -len(item[1])))
    return [
        endpoint_stats(name, kind, group, window_s, seed=index)
        for index, ((kind, name), group) in enumerate(ordered)
    ]


def run_window_s(samples: Sequence[Sample]) -> float:
    """Seconds from the first request's start to the last one's end (0 with no samples)."""
    if not samples:
        return 0.0
    start = min(s.t for s in samples)
    end = max(s.t + s.ms / 1000 for s in samples)
    return max(end - start, 1e-9)


def slope_per_10k(requests: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares growth of ``values`` per 10,000 ``requests`` (None when the requests
    do not vary)."""
    x = np.asarray(requests, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, np.asarray(values, dtype=np.float64), 1)[0]) * 10_000
