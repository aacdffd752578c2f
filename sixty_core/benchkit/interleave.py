"""Sides timed in alternating rounds in one process, and their ratios with intervals.

On a shared machine the speed drifts by tens of percent over a minute. Timing legacy for a
minute and then optimized for a minute folds that drift into the ratio. Here every round
times one batch of each side, the order reversed every other round (A B, B A, A B, ...), so
drift and order effects hit both alike; the ratio is taken per round and summarized by its
median with a bootstrap percentile interval.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sixty_core.benchkit.counters import Call

#: Bootstrap resamples for a ratio's interval; the resampling RNG is seeded so the same
#: samples always give the same interval.
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
#: A batch grows until it takes at least this long (or reaches MAX_BATCH calls).
MAX_BATCH = 100_000


@dataclass
class Side:
    """One side's per-call seconds per round, its batch size and CPU time."""

    name: str
    batch: int = 1
    per_call_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    calls: int = 0

    def summary(self) -> dict[str, Any]:
        samples = self.per_call_s
        quartiles = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [0.0] * 3
        return {
            "median_us": statistics.median(samples) * 1e6 if samples else None,
            "mean_us": statistics.fmean(samples) * 1e6 if samples else None,
            "iqr_us": (quartiles[2] - quartiles[0]) * 1e6,
            "rounds": len(samples),
            "batch": self.batch,
            "cpu_us_per_call": self.cpu_s / self.calls * 1e6 if self.calls else None,
            "samples_us": [round(s * 1e6, 3) for s in samples],
        }


async def _batch(call: Call, k: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``k`` awaited calls, both read inside the loop."""
    cpu_start = time.process_time()
    start = time.perf_counter()
    for _ in range(k):
        await call()
    return time.perf_counter() - start, time.process_time() - cpu_start


def calibrate(loop: asyncio.AbstractEventLoop, call: Call, min_batch_s: float) -> int:
    """The smallest power of two of calls whose batch takes at least ``min_batch_s``."""
    k = 1
    while k < MAX_BATCH and loop.run_until_complete(_batch(call, k))[0] < min_batch_s:
        k *= 2
    return k


class Interleaved:
    """Times ``calls`` (name -> call) in alternating rounds on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, calls: Mapping[str, Call]) -> None:
        if not calls:
            raise ValueError("nothing to time: no sides")
        self.loop = loop
        self.calls = dict(calls)
        self.sides = {name: Side(name) for name in calls}
        self._round = 0

    def calibrate(self, min_batch_s: float) -> None:
        for name, call in self.calls.items():
            self.sides[name].batch = calibrate(self.loop, call, min_batch_s)

    def run_round(self) -> None:
        """One batch of every side, in forward order on even rounds, reversed on odd."""
        names = list(self.calls)
        if self._round % 2:
            names.reverse()
        self._round += 1
        for name in names:
            side = self.sides[name]
            elapsed, cpu_s = self.loop.run_until_complete(_batch(self.calls[name], side.batch))
            side.cpu_s += cpu_s
            side.calls += side.batch
            side.per_call_s.append(elapsed / side.batch)

    def ratio(self, numerator: str, denominator: str) -> dict[str, Any]:
        """``numerator``'s time per call over ``denominator``'s: the median of per-round
        ratios with a bootstrap interval (None bounds with fewer than 3 rounds)."""
        pairs = zip(
            self.sides[numerator].per_call_s, self.sides[denominator].per_call_s, strict=True
        )
        ratios = [a / b for a, b in pairs if b > 0]
        low, high = bootstrap_median_interval(ratios)
        return {
            "numerator": numerator,
            "denominator": denominator,
            "ratio": statistics.median(ratios) if ratios else None,
            "low": low,
            "high": high,
            "confidence": CONFIDENCE,
            "rounds": len(ratios),
        }


def bootstrap_median_interval(
    values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the median of ``values``; (None, None) with fewer
    than 3 values, where an interval would claim more than the data holds."""
    if len(values) < 3:
        return None, None
    rng = random.Random(0)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1.0 - confidence) / 2.0
    low = medians[int(tail * (resamples - 1))]
    high = medians[round((1.0 - tail) * (resamples - 1))]
    return low, high
