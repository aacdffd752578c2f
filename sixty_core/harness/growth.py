"""How a cost grows: power-law exponents over data size, and where load saturates.

**Growth exponent.** A metric ``m`` measured at deal counts ``n`` is fitted as
``m ≈ c · n^k`` by least squares on ``log m`` against ``log n``; ``k`` is the exponent.
``k`` near 0 is flat, near 1 linear. Its 95% interval comes from the data behind each
point when there are any (the raw latencies: each point is re-drawn from its own samples,
seeded, and the fit repeated), else from the fit's own residuals (Student's t with
``n - 2`` degrees of freedom; with two points, or points exactly on a power law, the
interval is the point). A metric that is 0 at some scale and not at others has no power
law: its exponent is None and its growth is named "from zero".

**Saturation.** In a load sweep (rising user counts, each held until it settles), the
saturation point is the first step after which adding users stops adding good throughput
(successful requests per second) — the next step gains less than
:data:`SATURATION_GAIN` of what its extra users would bring at the current per-user rate —
while the service shows it is full in one of the two ways it can: p99 climbs by at least
:data:`SATURATION_P99_RISE` (requests queue), or the share of failed requests rises by
at least :data:`SATURATION_FAILURE_RISE` (requests are shed, as the optimized profile's
admission control does with 503s). None when no step qualifies: the sweep never got there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sixty_core.load.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE

#: Below this absolute exponent a cost is called flat (the issue's own threshold).
FLAT_EXPONENT = 0.1
#: Between these, linear; above the upper one, worse than linear.
LINEAR_EXPONENT = (0.9, 1.1)
#: A step saturates when the next one gains less than this share of the throughput its
#: extra users would add at the current per-user rate ...
SATURATION_GAIN = 0.25
#: ... and the next step's p99 is at least this many times the current one's ...
SATURATION_P99_RISE = 1.5
#: ... or its share of failed requests is higher by at least this much (absolute).
SATURATION_FAILURE_RISE = 0.05


@dataclass(frozen=True)
class Fit:
    """A fitted growth exponent with its 95% interval and its plain name."""

    exponent: float | None
    low: float | None
    high: float | None
    growth: str


def growth_name(exponent: float | None) -> str:
    """The plain name of an exponent: falls, flat, sublinear, linear, worse than linear."""
    if exponent is None:
        return "from zero"
    if exponent < -FLAT_EXPONENT:
        return "falls"
    if exponent < FLAT_EXPONENT:
        return "flat"
    if exponent < LINEAR_EXPONENT[0]:
        return "sublinear"
    if exponent <= LINEAR_EXPONENT[1]:
        return "linear"
    return "worse than linear"


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slopes of each row of ``y`` (log values) against ``x`` (log sizes)."""
    centred = x - x.mean()
    slopes: np.ndarray = ((y - y.mean(axis=-1, keepdims=True)) @ centred) / float(centred @ centred)
    return slopes


def fit_exponent(
    sizes: Sequence[float],
    values: Sequence[float],
    *,
    samples: Sequence[Sequence[float]] | None = None,
    statistic: float | None = None,
    seed: int = 0,
) -> Fit:
    """The growth exponent of ``values`` over ``sizes`` (at least two distinct sizes).

    With ``samples`` (the raw data behind each value) and ``statistic`` (the percentile,
    0-100, each value is of them), the interval is a seeded bootstrap of the whole fit;
    otherwise it comes from the residuals.
    """
    if len(sizes) != len(values) or len(set(sizes)) < 2:
        raise ValueError("a growth fit needs values at two or more distinct sizes")
    if any(s <= 0 for s in sizes) or any(v < 0 for v in values):
        raise ValueError("sizes must be positive and values non-negative")
    if all(v == values[0] for v in values):
        return Fit(0.0, 0.0, 0.0, growth_name(0.0))
    if any(v == 0 for v in values):
        return Fit(None, None, None, growth_name(None))
    x = np.log(np.asarray(sizes, dtype=np.float64))
    y = np.log(np.asarray(values, dtype=np.float64))
    exponent = float(_slopes(x, y[np.newaxis, :])[0])
    if samples is not None and statistic is not None:
        low, high = _bootstrap_interval(x, samples, statistic, seed)
    else:
        low, high = _residual_interval(x, y, exponent)
    return Fit(exponent, low, high, growth_name(exponent))


def _bootstrap_interval(
    x: np.ndarray, samples: Sequence[Sequence[float]], statistic: float, seed: int
) -> tuple[float | None, float | None]:
    rng = np.random.default_rng(seed)
    columns = []
    for data in samples:
        values = np.asarray(data, dtype=np.float64)
        if len(values) == 0:
            return None, None
        picks = values[rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))]
        columns.append(np.percentile(picks, statistic, axis=1))
    drawn = np.column_stack(columns)
    if np.any(drawn <= 0):
        return None, None
    slopes = _slopes(x, np.log(drawn))
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(slopes, [alpha, 1 - alpha])
    return float(low), float(high)


def _residual_interval(x: np.ndarray, y: np.ndarray, exponent: float) -> tuple[float, float]:
    n = len(x)
    if n < 3:
        return exponent, exponent
    intercept = y.mean() - exponent * x.mean()
    residual = y - (intercept + exponent * x)
    spread = float(residual @ residual) / (n - 2)
    error = math.sqrt(spread / float(((x - x.mean()) ** 2).sum()))
    margin = _t_quantile(n - 2) * error
    return exponent - margin, exponent + margin


#: Student's t 97.5% quantiles for 1..10 degrees of freedom (standard tables; scipy is
#: not a dependency, and a sweep has few sizes). Past 10 the df-10 value is used: a little
#: wider than exact, never narrower.
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def _t_quantile(df: int) -> float:
    return _T_975[min(df, len(_T_975)) - 1]


@dataclass(frozen=True)
class StepFigures:
    """One load step as measured: users, good throughput (successful req/s), p99 (ms)
    and the share of its requests that failed."""

    users: int
    ok_rps: float
    p99_ms: float | None
    failure_share: float = 0.0


def saturation_index(steps: Sequence[StepFigures]) -> int | None:
    """Index of the saturation step (see the module's rule), or None if never reached."""
    for i in range(len(steps) - 1):
        here, there = steps[i], steps[i + 1]
        if here.users <= 0 or here.p99_ms is None or there.p99_ms is None:
            continue
        expected_gain = here.ok_rps / here.users * (there.users - here.users)
        stalled = there.ok_rps - here.ok_rps < SATURATION_GAIN * expected_gain
        queueing = there.p99_ms >= SATURATION_P99_RISE * here.p99_ms
        shedding = there.failure_share - here.failure_share >= SATURATION_FAILURE_RISE
        if stalled and (queueing or shedding):
            return i
    return None


def best_within_budget(steps: Sequence[StepFigures], p99_budget_ms: float) -> StepFigures | None:
    """The step with the highest good throughput whose p99 is within ``p99_budget_ms``."""
    within = [s for s in steps if s.p99_ms is not None and s.p99_ms <= p99_budget_ms]
    return max(within, key=lambda s: s.ok_rps, default=None)
