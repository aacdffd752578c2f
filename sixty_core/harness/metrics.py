"""Every figure of a report or a gate, derived from a :class:`~.results.Results` at read time.

A metric is named ``<profile>.<metric>[.<part>]`` (``optimized.deal_create_ms.p95``) and
carries its 95% interval. Two kinds:

- **measured** (``exact`` False): timings, rates and memory, noisy on a shared machine. A
  percentile's interval is a seeded bootstrap of the raw samples, a rate's is Wilson's; a
  figure measured once (peak RSS, pool efficiency) has its point as both bounds, which a
  report says, and :command:`sixty calibrate` is how its noise gets known.
- **counters** (``exact`` True): statements per request, duplicates, leaking components,
  leftovers — deterministic for a profile, so a gate compares them exactly.

The definitions are DESIGN §6's; :data:`DEFINITIONS` holds the sentence each report
prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sixty_core.harness.results import ProfileRecord, Results, Series
from sixty_core.harness.scaling_results import ScalingRecord
from sixty_core.load.stats import PERCENTILES, Estimate, bootstrap_percentile, wilson_interval
from sixty_core.reliability.scorecard import ReliabilityRecord

#: The six metrics of the seed report, in its order.
SEED_METRICS = (
    "memory_peak_mb",
    "api_failure_rate",
    "deal_create_ms",
    "cache_hit_rate",
    "pool_efficiency",
    "leaking_components",
)

#: The source of every metric of a profile whose load run is missing.
NO_LOAD_RUN = "no load run"
#: The source of a hit rate when the service looked nothing up in a cache.
NO_CACHE_LOOKUPS = "no cache lookups"

DEFINITIONS: dict[str, str] = {
    "memory_peak_mb": "peak RSS (VmHWM) of the service process over the load run; memray's "
    "peak heap from the leak run beside it",
    "api_failure_rate": "failed / all HTTP requests of the load run; failed = transport "
    "error, 5xx, unexpected 4xx, or a 2xx whose body breaks the API contract (Wilson "
    "interval)",
    "deal_create_ms": "p50/p95/p99 of the user-visible create action, fallbacks included, "
    "from every raw sample (seeded bootstrap interval)",
    "cache_hit_rate": "hits / (hits + misses) over every service cache during the load run "
    "(Wilson interval over lookups)",
    "pool_efficiency": "busy connection-seconds / open connection-seconds over the load "
    "run, accounted at acquire and release; it falls as caches take load off the database",
    "leaking_components": "components whose resources grew every cycle, were left over "
    "after the workload drained, or that memray named, in the leak run",
}


@dataclass(frozen=True)
class Metric:
    """One figure. ``low``/``high`` bound its 95% interval (equal to ``value`` when it was
    measured once or is exact); ``value`` None means the run did not measure it."""

    key: str
    value: float | None
    low: float | None
    high: float | None
    unit: str
    exact: bool
    lower_is_better: bool
    source: str

    @property
    def measured(self) -> bool:
        return self.value is not None


def _metric(
    key: str,
    estimate: Estimate | float | None,
    *,
    unit: str,
    source: str,
    exact: bool = False,
    lower_is_better: bool = True,
) -> Metric:
    if estimate is None:
        return Metric(key, None, None, None, unit, exact, lower_is_better, source)
    if isinstance(estimate, Estimate):
        return Metric(
            key, estimate.value, estimate.low, estimate.high, unit, exact, lower_is_better, source
        )
    value = float(estimate)
    return Metric(key, value, value, value, unit, exact, lower_is_better, source)


def series_delta(series: Series, column: str) -> float | None:
    """Last minus first value of a cumulative ``column`` (None when it was not sampled)."""
    values: list[float] = getattr(series, column)
    if len(values) < 2:
        return None
    return values[-1] - values[0]


def cache_hit_rate(series: Series) -> Estimate | None:
    hits, misses = series_delta(series, "cache_hits"), series_delta(series, "cache_misses")
    if hits is None or misses is None or hits + misses <= 0:
        return None
    lookups = round(hits + misses)
    # Wilson on the misses, turned round: the interval of a proportion near 1.
    miss = wilson_interval(round(misses), lookups)
    return Estimate(1 - miss.value, 1 - miss.high, 1 - miss.low)


def pool_efficiency(series: Series) -> float | None:
    busy = series_delta(series, "pool_busy_connection_s")
    opened = series_delta(series, "pool_open_connection_s")
    if busy is None or not opened:
        return None
    return busy / opened


def _load_metrics(record: ProfileRecord) -> Iterator[Metric]:
    name = record.profile
    load = record.load
    source = f"{load.dir}/samples" if load else NO_LOAD_RUN
    if load is None:
        for metric in ("memory_peak_mb", "api_failure_rate", "cache_hit_rate"):
            yield _metric(f"{name}.{metric}", None, unit="", source=source)
        for q in PERCENTILES:
            yield _metric(f"{name}.deal_create_ms.p{q:.0f}", None, unit="ms", source=source)
        return
    yield _metric(
        f"{name}.memory_peak_mb",
        load.peak_rss_mb,
        unit="MB",
        source=f"{load.peak_rss_source} of the service in {load.dir}",
    )
    failed = sum(1 for ok in load.raw.ok if not ok)
    yield _metric(
        f"{name}.api_failure_rate",
        wilson_interval(failed, len(load.raw.ok)),
        unit="ratio",
        source=f"{len(load.raw.ok)} request samples of {source}",
    )
    creates = load.raw.creates_ms
    for q in PERCENTILES:
        yield _metric(
            f"{name}.deal_create_ms.p{q:.0f}",
            bootstrap_percentile(creates, q, seed=int(q)) if creates else None,
            unit="ms",
            source=f"{len(creates)} wizard creates in {source}",
        )
    series_source = f"{load.dir}/timeseries.jsonl ({len(load.series.t_s)} scrapes)"
    hit_rate = cache_hit_rate(load.series)
    yield _metric(
        f"{name}.cache_hit_rate",
        hit_rate,
        unit="ratio",
        source=series_source if hit_rate is not None else NO_CACHE_LOOKUPS,
        lower_is_better=False,
    )
    yield _metric(
        f"{name}.pool_efficiency",
        pool_efficiency(load.series),
        unit="ratio",
        source=series_source,
        lower_is_better=False,
    )
    window = load.window_s
    yield _metric(
        f"{name}.throughput_rps",
        len(load.raw.ok) / window if window > 0 else None,
        unit="req/s",
        source=source,
        lower_is_better=False,
    )
    yield _metric(
        f"{name}.duplicates_in_db",
        load.duplicates_in_db,
        unit="rows",
        source=f"LISTEN on the deals trigger during {load.dir}",
        exact=True,
    )


def _leak_metrics(record: ProfileRecord) -> Iterator[Metric]:
    name = record.profile
    leaks = record.leaks
    if leaks is None:
        yield _metric(f"{name}.leaking_components", None, unit="count", source="no leak run")
        return
    source = f"{leaks.dir}/leaks.json ({leaks.cycles} cycles, {leaks.requests} requests)"
    yield _metric(
        f"{name}.leaking_components",
        len(leaks.leaking_components),
        unit="count",
        source=source,
        exact=True,
    )
    yield _metric(f"{name}.memray_peak_heap_mb", leaks.peak_heap_mb, unit="MB", source=source)
    for counter, value in sorted(leaks.leftover.items()):
        yield _metric(f"{name}.leftover.{counter}", value, unit="count", source=source, exact=True)


def _statement_metrics(record: ProfileRecord) -> Iterator[Metric]:
    source = "sixty probe: one request at a time, warm"
    for count in record.statements:
        yield _metric(
            f"{record.profile}.statements.{count.endpoint}",
            count.steady,
            unit="statements/request",
            source=source,
            exact=True,
        )
    if record.statements:
        yield _metric(
            f"{record.profile}.stale_reads",
            sum(c.stale_reads for c in record.statements),
            unit="count",
            source=source + ", each write read back at once",
            exact=True,
        )
    for count in record.statements:
        if count.response_bytes:
            # Measured once, not exact: a timestamp's digits can vary by a byte or two.
            yield _metric(
                f"{record.profile}.response_bytes.{count.endpoint}",
                count.response_bytes,
                unit="bytes",
                source=source,
            )


def profile_metrics(record: ProfileRecord) -> dict[str, Metric]:
    """Every metric of one profile, keyed ``<profile>.<metric>``."""
    found = [*_load_metrics(record), *_leak_metrics(record), *_statement_metrics(record)]
    return {m.key: m for m in found}


def scaling_metrics(record: ScalingRecord) -> dict[str, Metric]:
    """The sweeps' figures: ``<profile>.growth.<metric>.<endpoint|service>`` (the fitted
    exponent with its interval; None when a zero among the values leaves no power law),
    ``<profile>.saturation_users`` and ``<profile>.best_rps_within_p99_budget``."""
    found: list[Metric] = []
    for curve in record.curves:
        found.append(
            Metric(
                key=f"{curve.profile}.growth.{curve.metric}.{curve.endpoint or 'service'}",
                value=curve.exponent,
                low=curve.exponent if curve.low is None else curve.low,
                high=curve.exponent if curve.high is None else curve.high,
                unit="exponent",
                exact=False,
                lower_is_better=True,
                source=f"log-log fit over {len(curve.points)} scales ({curve.growth})",
            )
        )
    for sweep in record.sweeps:
        source = f"load sweep {sweep.dir}, steps " + ",".join(str(s.users) for s in sweep.steps)
        found.append(
            _metric(
                f"{sweep.profile}.saturation_users",
                sweep.saturation_users,
                unit="users",
                source=source,
                lower_is_better=False,
            )
        )
        found.append(
            _metric(
                f"{sweep.profile}.best_rps_within_p99_budget",
                sweep.best_rps_within_budget,
                unit="req/s",
                source=f"{source}; p99 budget {sweep.p99_budget_ms:g} ms",
                lower_is_better=False,
            )
        )
    return {m.key: m for m in found}


#: Scorecard figures that become gate metrics, with their units; each is a count or a
#: maximum over the scenarios run, exact (no interval), lower is better.
RELIABILITY_FIGURES: dict[str, str] = {
    "scenarios_failed": "scenarios",
    "faults_not_survived": "scenarios",
    "deadline_overshoot_ms": "ms",
    "leaked_connections": "connections",
    "leaked_tasks": "tasks",
    "leaked_fds": "fds",
    "recovery_s": "s",
    "rows_lost": "rows",
    "rows_duplicated": "rows",
    "stale_reads": "reads",
    "loader_calls_per_key": "calls",
    "cross_tenant_accesses": "accesses",
    "raw_server_errors": "responses",
    "injection_findings": "call sites",
}


def reliability_metrics(record: ReliabilityRecord) -> dict[str, Metric]:
    """``<profile>.reliability.<figure>`` for each scorecard figure a run measured."""
    found: dict[str, Metric] = {}
    for card in record.scorecards:
        values = {
            **{name: getattr(card, name, None) for name in RELIABILITY_FIGURES},
            "scenarios_failed": card.scenarios_run - card.scenarios_passed,
            "faults_not_survived": card.faults_attempted - card.faults_survived,
        }
        for name, unit in RELIABILITY_FIGURES.items():
            key = f"{card.profile}.reliability.{name}"
            source = f"sixty reliability, {card.scenarios_run} scenarios"
            found[key] = _metric(key, values[name], unit=unit, source=source, exact=True)
    return found


def all_metrics(results: Results) -> dict[str, Metric]:
    """Every metric of every profile in ``results``, the sweeps' and scorecard's included."""
    merged: dict[str, Metric] = {}
    for record in results.profiles:
        merged.update(profile_metrics(record))
    if results.scaling is not None:
        merged.update(scaling_metrics(results.scaling))
    if results.reliability is not None:
        merged.update(reliability_metrics(results.reliability))
    return merged
