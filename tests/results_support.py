"""Builders of small ``Results`` whose figures ``all_metrics`` derives from raw samples,
shared by the gate and compare tests."""

from __future__ import annotations

import io

import msgspec
from rich.console import Console

from sixty_core.harness.results import (
    Fingerprint,
    LeakRecord,
    LoadRecord,
    Method,
    ProfileRecord,
    RawRequests,
    Results,
    Series,
    StatementCount,
)
from sixty_core.load.scenario import STANDARD


def fingerprint(**changes: object) -> Fingerprint:
    base = Fingerprint(
        cpu_model="Test CPU 3000",
        cores=2,
        memory_gb=8.0,
        system="Linux",
        python="3.11.9",
        packages={"asyncpg": "0.30.0", "msgspec": "0.19.0"},
        postgres="16.4",
        db_backend="embedded",
        git_commit="abc123",
        git_dirty=False,
    )
    return msgspec.structs.replace(base, **changes)


def creates(median: float = 120.0, n: int = 200) -> list[float]:
    """``n`` create times spread evenly over median +- 20%: a p50 near ``median`` with a
    bootstrap interval a few percent wide."""
    return [median * (0.8 + 0.4 * i / (n - 1)) for i in range(n)]


def profile(
    name: str = "optimized",
    *,
    requests: int = 1000,
    failures: int = 0,
    creates_ms: list[float] | None = None,
    peak_rss_mb: float | None = 100.0,
    hits: float = 900.0,
    misses: float = 100.0,
    duplicates_in_db: int | None = 0,
    leaking: tuple[str, ...] = (),
    statements: dict[str, float] | None = None,
    load: bool = True,
) -> ProfileRecord:
    ok = [i >= failures for i in range(requests)]
    series = Series(
        t_s=[0.0, 60.0],
        cache_hits=[0.0, hits],
        cache_misses=[0.0, misses],
        pool_busy_connection_s=[0.0, 30.0],
        pool_open_connection_s=[0.0, 60.0],
    )
    record = LoadRecord(
        dir=f"{name}/load",
        client="optimized",
        window_s=60.0,
        raw=RawRequests(
            t_s=[i * 0.06 for i in range(requests)],
            ms=[10.0] * requests,
            ok=ok,
            creates_ms=creates() if creates_ms is None else creates_ms,
        ),
        failure_reasons={"5xx": failures} if failures else {},
        endpoints=[],
        peak_rss_mb=peak_rss_mb,
        peak_rss_source="VmHWM",
        duplicates_seen_by_clients=0,
        duplicates_in_db=duplicates_in_db,
        series=series,
        locust_total=requests,
        samples_match_locust=True,
    )
    leaks = LeakRecord(
        dir=f"{name}/leaks",
        cycles=15,
        warmup=5,
        requests=540,
        leaking_components=list(leaking),
        evidence=[],
        peak_heap_mb=40.0,
        peak_rss_traced_mb=90.0,
        heap_slope_mb_per_10k_requests=0.0,
        leftover={"asyncio_tasks": 0.0, "fds": 0.0},
        flamegraph=None,
    )
    counts = {"/api/stages": 1.0, "/api/deals": 3.0} if statements is None else statements
    return ProfileRecord(
        profile=name,
        load=record if load else None,
        leaks=leaks,
        statements=[StatementCount(e, int(s), s, 0.0, 2048.0) for e, s in counts.items()],
    )


def build_results(*profiles: ProfileRecord, fp: Fingerprint | None = None) -> Results:
    return Results(
        schema="sixty.results/1",
        created_at="2025-01-01T00:00:00Z",
        fingerprint=fp or fingerprint(),
        method=Method(
            scenario=STANDARD,
            shape="steady",
            quick=True,
            leak_cycles=15,
            leak_warmup=5,
            db_backend="embedded",
            template_clone=True,
        ),
        profiles=list(profiles) or [profile("legacy"), profile()],
    )


def console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=400, color_system=None), buffer
