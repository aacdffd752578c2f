"""``load.json``: what one load run measured, built from its raw samples and its probes.

Every figure traces to raw data kept beside it in the run directory: latencies and
failures to ``samples/*.jsonl``, service-side figures to ``timeseries.jsonl``. The
failure rate counts HTTP requests only (``ACTION`` samples time a user action made of
requests already counted).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections import Counter
from pathlib import Path

import msgspec

from sixty_core.load.probes import RunFigures
from sixty_core.load.samples import ACTION, SampleSet
from sixty_core.load.scenario import Scenario
from sixty_core.load.stats import (
    EndpointStats,
    Estimate,
    by_endpoint,
    run_window_s,
    wilson_interval,
)
from sixty_core.memray_sites import PeakAllocator

SCHEMA = "sixty.load/1"
CREATE_ACTION = "create deal (wizard)"


class SampleAccounting(msgspec.Struct):
    """How the merged samples square with Locust's own count (they must be equal)."""

    count: int
    files: list[str]
    torn_lines: int
    locust_total: int | None
    matches_locust: bool | None


class PeakMemory(msgspec.Struct):
    """Peak RSS of the service over the run, and how it was measured: ``VmHWM`` of the
    process the harness started, or the highest ``/metrics`` sample of a remote one."""

    mb: float | None
    source: str


class LoadMemray(msgspec.Struct):
    """The service's heap under memray during the run (``sixty load --memray``)."""

    capture: str
    peak_heap_mb: float
    at_peak: list[PeakAllocator]


class LoadResult(msgspec.Struct):
    schema: str
    scenario: Scenario
    shape: str
    target: str
    profile: str | None
    client: str
    workers: int
    started_at: float
    window_s: float
    requests: int
    failures: int
    failure_rate: Estimate
    rps: float
    failure_reasons: dict[str, int]
    contract_violations: int
    deal_create: EndpointStats | None
    duplicates_created: int
    duplicates_in_db: int | None
    #: Rows the run inserted that were deleted before their name could be read: each may
    #: hide a duplicate from ``duplicates_in_db`` (None when the database was not watched).
    inserted_unnamed: int | None
    endpoints: list[EndpointStats]
    actions: list[EndpointStats]
    service: RunFigures
    peak_rss: PeakMemory
    samples: SampleAccounting
    probe_samples: int
    probe_failures: int
    environment: dict[str, str]
    memray: LoadMemray | None = None
    #: Deal rows inserted and deleted during the run, from the database's change feed
    #: (None when the database was not watched, as with ``--host``). Their difference is
    #: how much the data grew, which cached lists (and so the RSS) grow with.
    deals_inserted: int | None = None
    deals_deleted: int | None = None


def environment() -> dict[str, str]:
    """Where the run ran. Locust's version comes from its package metadata: importing
    Locust would patch this process with gevent (and deadlock its threads)."""
    return {
        "python": platform.python_version(),
        "locust": importlib.metadata.version("locust"),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "system": platform.platform(terse=True),
    }


def build(
    *,
    sample_set: SampleSet,
    scenario: Scenario,
    shape: str,
    target: str,
    profile: str | None,
    client: str,
    workers: int,
    service: RunFigures,
    peak_rss: PeakMemory,
    locust_total: int | None,
    duplicates_in_db: int | None,
    inserted_unnamed: int | None,
    probe_samples: int,
    probe_failures: int,
    deals_inserted: int | None = None,
    deals_deleted: int | None = None,
) -> LoadResult:
    samples = sample_set.samples
    requests = [s for s in samples if s.kind != ACTION]
    window = run_window_s(samples)
    stats = by_endpoint(samples, window)
    failed = [s for s in requests if not s.ok]
    reasons = Counter(s.reason or "unknown" for s in failed)
    creates = [s for s in stats if s.kind == ACTION and s.name == CREATE_ACTION]
    created = [s.created for s in samples if s.kind == ACTION and s.name == CREATE_ACTION]
    return LoadResult(
        schema=SCHEMA,
        scenario=scenario,
        shape=shape,
        target=target,
        profile=profile,
        client=client,
        workers=workers,
        started_at=samples[0].t if samples else 0.0,
        window_s=window,
        requests=len(requests),
        failures=len(failed),
        failure_rate=wilson_interval(len(failed), len(requests)),
        rps=len(requests) / window if window > 0 else 0.0,
        failure_reasons=dict(reasons.most_common()),
        contract_violations=sum(1 for s in failed if (s.reason or "").startswith("contract:")),
        deal_create=creates[0] if creates else None,
        duplicates_created=sum(max(0, n - 1) for n in created),
        duplicates_in_db=duplicates_in_db,
        inserted_unnamed=inserted_unnamed,
        endpoints=[s for s in stats if s.kind != ACTION],
        actions=[s for s in stats if s.kind == ACTION],
        service=service,
        peak_rss=peak_rss,
        samples=SampleAccounting(
            count=len(samples),
            files=sample_set.files,
            torn_lines=sample_set.torn_lines,
            locust_total=locust_total,
            matches_locust=None if locust_total is None else locust_total == len(samples),
        ),
        probe_samples=probe_samples,
        probe_failures=probe_failures,
        environment=environment(),
        deals_inserted=deals_inserted,
        deals_deleted=deals_deleted,
    )


def write(result: LoadResult, path: Path) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n")


def read(path: Path) -> LoadResult:
    """A ``load.json``; ValueError naming the file when it is not one."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=LoadResult)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"{path} is not a sixty load result: {exc}") from None
