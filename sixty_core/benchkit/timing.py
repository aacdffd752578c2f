"""Time a coroutine with pytest-benchmark on one persistent event loop.

pytest-benchmark times synchronous functions: it calls ``function()`` ``iterations`` times
between two timer reads. Wrapping each call in ``loop.run_until_complete`` would put the
loop's start and stop (tens of microseconds) inside every timed call, more than a cache hit
costs. :class:`AsyncBench` instead gives pytest-benchmark a runner that enters the loop once
per round and awaits the coroutine ``iterations`` times *inside* it, between the two timer
reads. pytest-benchmark's calibration (choosing ``iterations``), warm-up, rounds, GC option
and statistics are all its own. The loop, the pool and the connections exist before the
first round, so neither start-up is ever timed.

This relies on one private seam of pytest-benchmark 5.x, ``BenchmarkFixture._make_runner``
(the function that builds the timed loop); :func:`install_runner` checks that it is there and
fails loudly if a new pytest-benchmark renamed it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sixty_core.benchkit.counters import (
    Call,
    CounterSource,
    allocations_per_call,
    count_calls,
)
from sixty_core.benchkit.interleave import Interleaved

#: Calls per counting pass: enough to average out a first-call effect, cheap under memray.
COUNTING_CALLS = 20
#: Calls per counting pass when timing is off (``--benchmark-disable``: smoke mode).
SMOKE_COUNTING_CALLS = 2


class CpuClock:
    """Process CPU time and calls, accumulated over every timed round."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    @property
    def us_per_call(self) -> float | None:
        return round(self.seconds / self.calls * 1e6, 2) if self.calls else None


def install_runner(
    benchmark: Any, loop: asyncio.AbstractEventLoop, call: Call, cpu: CpuClock
) -> None:
    """Make ``benchmark`` time ``call`` awaited inside ``loop`` (see the module docstring)."""
    if not callable(getattr(benchmark, "_make_runner", None)):
        raise RuntimeError(
            "this pytest-benchmark has no BenchmarkFixture._make_runner; sixty's async "
            "benchmarks support pytest-benchmark 5.x"
        )
    timer = benchmark._timer
    disable_gc = benchmark._disable_gc

    # The CPU clock is read inside the loop, beside the timer, so entering and leaving the
    # loop is no more in the CPU figure than in the time.
    async def timed(loops: range) -> float:
        cpu_start = time.process_time()
        start = timer()
        for _ in loops:
            await call()
        elapsed = float(timer() - start)
        cpu.seconds += time.process_time() - cpu_start
        cpu.calls += len(loops)
        return elapsed

    async def timed_once() -> tuple[float, Any]:
        cpu_start = time.process_time()
        start = timer()
        result = await call()
        elapsed = float(timer() - start)
        cpu.seconds += time.process_time() - cpu_start
        cpu.calls += 1
        return elapsed, result

    def make_runner(function: Any, args: Any, kwargs: Any) -> Callable[..., Any]:
        def runner(loops_range: range | None, timer: Any = None) -> Any:
            gc_was_enabled = gc.isenabled()
            if disable_gc:
                gc.disable()
            try:
                if loops_range:
                    return loop.run_until_complete(timed(loops_range))
                return loop.run_until_complete(timed_once())
            finally:
                if gc_was_enabled:
                    gc.enable()

        return runner

    benchmark._make_runner = make_runner


class AsyncBench:
    """The ``abench`` fixture: ``abench(call, sources=..., keys=...)`` benchmarks ``call``.

    ``call`` is a zero-argument coroutine function. Before timing, one warm-up call runs and
    a counting pass records per-call counters (:func:`~.counters.count_calls`) and
    allocations; both land in ``benchmark.extra_info`` with ``cpu_us_per_call`` (process CPU
    time over all timed rounds / calls), steadier than wall time on a shared machine.
    Returns the last call's result.
    """

    def __init__(
        self,
        benchmark: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        rounds: int = 15,
        min_batch_s: float = 0.005,
    ) -> None:
        self.benchmark = benchmark
        self.loop = loop
        self.rounds = rounds
        self.min_batch_s = min_batch_s

    @property
    def timing(self) -> bool:
        return not self.benchmark.disabled

    def __call__(
        self,
        call: Call,
        *,
        sources: Mapping[str, CounterSource] | None = None,
        keys: tuple[str, ...] | None = None,
    ) -> Any:
        loop = self.loop
        info = self.benchmark.extra_info
        info["kind"] = "single"
        info["counters"] = self._count(call, sources, keys)
        cpu = CpuClock()
        install_runner(self.benchmark, loop, call, cpu)
        result = self.benchmark(lambda: loop.run_until_complete(call()))
        info["cpu_us_per_call"] = cpu.us_per_call
        return result

    def compare(
        self,
        calls: Mapping[str, Call],
        *,
        ratios: Sequence[tuple[str, str]],
        sources: Mapping[str, Mapping[str, CounterSource]] | None = None,
        keys: tuple[str, ...] | None = None,
        min_batch_s: float | None = None,
    ) -> Interleaved:
        """Time every side of ``calls`` in alternating rounds (:mod:`.interleave`).

        Each side is warmed and counted first. pytest-benchmark's statistics for this test
        are per *round* (one batch of every side); the per-side figures, their counters and
        ``ratios`` (numerator, denominator: time per call over time per call, with a 95%
        bootstrap interval) are in ``extra_info``. ``min_batch_s`` overrides the session's
        batch length (a noisy call, such as a create under random edge faults, needs more
        calls per round to average over). In smoke mode every side runs once.
        """
        for numerator, denominator in ratios:
            if numerator not in calls or denominator not in calls:
                raise ValueError(f"ratio {numerator}/{denominator} names a missing side")
        counted = {
            name: self._count(call, (sources or {}).get(name), keys) for name, call in calls.items()
        }
        interleaved = Interleaved(self.loop, calls)
        if self.timing:
            interleaved.calibrate(self.min_batch_s if min_batch_s is None else min_batch_s)
        self.benchmark.pedantic(interleaved.run_round, rounds=self.rounds, iterations=1)
        info = self.benchmark.extra_info
        info["kind"] = "interleaved"
        info["sides"] = {
            name: {**side.summary(), "counters": counted[name]}
            for name, side in interleaved.sides.items()
        }
        info["ratios"] = [interleaved.ratio(a, b) for a, b in ratios]
        return interleaved

    def _count(
        self,
        call: Call,
        sources: Mapping[str, CounterSource] | None,
        keys: tuple[str, ...] | None,
    ) -> dict[str, float]:
        """Warm ``call`` once, then count it (statements, deltas, allocations) per call."""
        loop = self.loop
        loop.run_until_complete(call())
        n = COUNTING_CALLS if self.timing else SMOKE_COUNTING_CALLS
        counters = count_calls(loop, call, n, sources, keys=keys)
        allocations = allocations_per_call(loop, call, n)
        if allocations is not None:
            counters["allocations"] = allocations
        return counters
