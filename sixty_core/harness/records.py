"""From each part's own output to the records of ``results.json``.

A load run's record is read back from what the run left on disk (its raw samples and its
time series), not from the summary it printed, so ``results.json`` carries the raw
material and every figure is derived from it again (:mod:`sixty_core.harness.metrics`).
Paths inside records are relative to the folder holding ``results.json``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import msgspec

from sixty_core.benchkit import summary
from sixty_core.harness.leaks import LEFTOVER_COUNTERS, LeakResult
from sixty_core.harness.probe import EndpointCounts
from sixty_core.harness.results import (
    BenchRecord,
    BenchRow,
    EndpointRow,
    LeakEvidence,
    LeakRecord,
    LoadRecord,
    RawRequests,
    Series,
    StatementCount,
)
from sixty_core.load import samples
from sixty_core.load.probes import ProbeSample, summed
from sixty_core.load.result import CREATE_ACTION, LoadResult


def relative(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


def read_series(path: Path) -> Series:
    """The time series columns of a run's ``timeseries.jsonl`` (empty when missing)."""
    if not path.exists():
        return Series()
    decoder = msgspec.json.Decoder(ProbeSample)
    rows = [decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]
    if not rows:
        return Series()
    start = rows[0].t
    return Series(
        t_s=[round(r.t - start, 3) for r in rows],
        rss_mb=[None if r.rss_bytes is None else round(r.rss_bytes / 2**20, 3) for r in rows],
        requests=[r.series.get("http_requests_total", 0.0) for r in rows],
        cache_hits=[summed(r.series, "cache_hits_total") for r in rows],
        cache_misses=[summed(r.series, "cache_misses_total") for r in rows],
        pool_size=[r.series.get("pool_size", 0.0) for r in rows],
        pool_busy=[r.series.get("pool_busy", 0.0) for r in rows],
        pool_busy_connection_s=[
            r.series.get("pool_busy_connection_seconds_total", 0.0) for r in rows
        ],
        pool_open_connection_s=[
            r.series.get("pool_open_connection_seconds_total", 0.0) for r in rows
        ],
        statements=[r.series.get("db_statements_sent_total", 0.0) for r in rows],
    )


def read_raw(directory: Path) -> RawRequests:
    """Every request and every wizard create of a run's ``samples/`` folder."""
    found = samples.read_dir(directory).samples
    if not found:
        return RawRequests()
    start = found[0].t
    requests = [s for s in found if s.kind != samples.ACTION]
    return RawRequests(
        t_s=[round(s.t - start, 4) for s in requests],
        ms=[round(s.ms, 3) for s in requests],
        ok=[s.ok for s in requests],
        creates_ms=[
            round(s.ms, 3) for s in found if s.kind == samples.ACTION and s.name == CREATE_ACTION
        ],
    )


def load_record(outcome: LoadResult, run_dir: Path, base: Path) -> LoadRecord:
    return LoadRecord(
        dir=relative(run_dir, base),
        client=outcome.client,
        window_s=outcome.window_s,
        raw=read_raw(run_dir / "samples"),
        failure_reasons=outcome.failure_reasons,
        endpoints=[
            EndpointRow(
                name=e.name,
                requests=e.requests,
                failures=e.failures,
                p50_ms=e.p50_ms.value if e.p50_ms else None,
                p99_ms=e.p99_ms.value if e.p99_ms else None,
                rps=e.rps,
            )
            for e in [*outcome.endpoints, *outcome.actions]
        ],
        peak_rss_mb=outcome.peak_rss.mb,
        peak_rss_source=outcome.peak_rss.source,
        duplicates_seen_by_clients=outcome.duplicates_created,
        duplicates_in_db=outcome.duplicates_in_db,
        series=read_series(run_dir / "timeseries.jsonl"),
        locust_total=outcome.samples.locust_total,
        samples_match_locust=outcome.samples.matches_locust,
    )


def _our_frame(stack: list[str] | None) -> str | None:
    return next((f for f in stack or [] if f.startswith("sixty_core/")), None)


def leak_record(outcome: LeakResult, run_dir: Path, base: Path) -> LeakRecord:
    baseline = next((s for s in outcome.samples if s.phase == "baseline"), None)
    drained = next((s for s in outcome.samples if s.phase == "drained"), None)
    leftover: dict[str, float] = {}
    if baseline is not None and drained is not None:
        for counter in LEFTOVER_COUNTERS:
            if counter in baseline.series and counter in drained.series:
                leftover[counter] = max(0.0, drained.series[counter] - baseline.series[counter])
    memray = outcome.memray
    flame = memray.flamegraph if memray is not None else None
    return LeakRecord(
        dir=relative(run_dir, base),
        cycles=outcome.cycles,
        warmup=outcome.warmup,
        requests=outcome.requests,
        leaking_components=outcome.leaking_components,
        evidence=[
            LeakEvidence(v.component, v.rule, v.evidence, _our_frame(v.stack))
            for v in outcome.verdicts
        ],
        peak_heap_mb=memray.peak_heap_mb if memray is not None else None,
        peak_rss_traced_mb=outcome.peak_rss_mb,
        heap_slope_mb_per_10k_requests=(
            memray.heap_slope_mb_per_10k_requests if memray is not None else None
        ),
        leftover=leftover,
        flamegraph=relative(Path(flame), base) if flame else None,
    )


def statement_counts(counts: list[EndpointCounts]) -> list[StatementCount]:
    return [
        StatementCount(
            c.endpoint,
            c.first_queries,
            c.steady_queries,
            c.steady_auth_lookups,
            c.steady_response_bytes,
            c.stale_reads,
        )
        for c in counts
    ]


def bench_record(bench_json: Path, base: Path, *, quick: bool) -> BenchRecord:
    rows = summary.rows(summary.load(bench_json))
    return BenchRecord(
        dir=relative(bench_json.parent, base),
        quick=quick,
        rows=[BenchRow(**dataclasses.asdict(r)) for r in rows],
    )


def pool_loads(first: LoadRecord, second: LoadRecord) -> LoadRecord:
    """Two load runs of one profile as one sample: raw requests and creates pooled (the
    second's times shifted past the first's window), failures and duplicates summed, the
    higher peak RSS; the time series and endpoint rows stay the first run's."""
    shift = first.window_s
    raw = RawRequests(
        t_s=[*first.raw.t_s, *(t + shift for t in second.raw.t_s)],
        ms=[*first.raw.ms, *second.raw.ms],
        ok=[*first.raw.ok, *second.raw.ok],
        creates_ms=[*first.raw.creates_ms, *second.raw.creates_ms],
    )
    reasons = dict(first.failure_reasons)
    for reason, count in second.failure_reasons.items():
        reasons[reason] = reasons.get(reason, 0) + count
    peaks = [p for p in (first.peak_rss_mb, second.peak_rss_mb) if p is not None]
    in_db = (
        None
        if first.duplicates_in_db is None or second.duplicates_in_db is None
        else first.duplicates_in_db + second.duplicates_in_db
    )
    return msgspec.structs.replace(
        first,
        window_s=first.window_s + second.window_s,
        raw=raw,
        failure_reasons=reasons,
        peak_rss_mb=max(peaks) if peaks else None,
        duplicates_seen_by_clients=first.duplicates_seen_by_clients
        + second.duplicates_seen_by_clients,
        duplicates_in_db=in_db,
        pooled_with=[*first.pooled_with, second.dir],
    )
