"""``results.json``: the one record of a ``sixty run`` every report and gate is computed from.

Versioned (``schema``: ``sixty.results/<version>``) msgspec structs. Per profile it holds
the raw material of the six seed metrics (DESIGN §6), never only the figures: every
request's latency and outcome and every wizard create's time (from the run's
``samples/*.jsonl``), the service's time series (from ``timeseries.jsonl``), the peak RSS,
the leak run's verdicts with their evidence, and the statement counts per endpoint (a
deterministic probe). :mod:`sixty_core.harness.metrics` derives every figure, with its
interval, from these at read time, so a report can never disagree with its data.

Reading refuses, with one line naming the file and the problem: a missing or corrupt
file, another kind of JSON, and a schema version from the future.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from sixty_core.errors import SixtyError
from sixty_core.harness.scaling_results import ScalingRecord
from sixty_core.load.scenario import Scenario
from sixty_core.reliability.scorecard import ReliabilityRecord

SCHEMA_NAME = "sixty.results"
SCHEMA_VERSION = 1
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_VERSION}"


class ResultsError(SixtyError):
    """A results file that cannot be used: missing, corrupt, foreign or from the future."""


class Series(msgspec.Struct):
    """The service's time series over the load run, one column per quantity, sampled at
    the probe's rate. ``t_s`` is seconds from the first sample; counters are cumulative
    since the service started (deltas between two rows are what happened between them)."""

    t_s: list[float] = []
    rss_mb: list[float | None] = []
    requests: list[float] = []
    cache_hits: list[float] = []
    cache_misses: list[float] = []
    pool_size: list[float] = []
    pool_busy: list[float] = []
    pool_busy_connection_s: list[float] = []
    pool_open_connection_s: list[float] = []
    statements: list[float] = []


class RawRequests(msgspec.Struct):
    """Every HTTP request of the load run, in time order (columns): start ``t_s`` from the
    run's first sample, latency in ms, and whether it met its contract. ``creates_ms`` is
    every wizard create action (the user-visible create, fallbacks included)."""

    t_s: list[float] = []
    ms: list[float] = []
    ok: list[bool] = []
    creates_ms: list[float] = []


class EndpointRow(msgspec.Struct):
    """One endpoint of the load run (a table row; its figures come from the samples)."""

    name: str
    requests: int
    failures: int
    p50_ms: float | None
    p99_ms: float | None
    rps: float


class LoadRecord(msgspec.Struct):
    """One profile's load run. ``dir`` is its run folder, relative to ``results.json``."""

    dir: str
    client: str
    window_s: float
    raw: RawRequests
    failure_reasons: dict[str, int]
    endpoints: list[EndpointRow]
    peak_rss_mb: float | None
    peak_rss_source: str
    duplicates_seen_by_clients: int
    duplicates_in_db: int | None
    series: Series
    locust_total: int | None
    samples_match_locust: bool | None
    #: Further load runs of this profile pooled into ``raw`` (the gate re-measured an
    #: inconclusive figure), as run folders.
    pooled_with: list[str] = []


class LeakEvidence(msgspec.Struct):
    component: str
    rule: str
    evidence: str
    #: The innermost frame of the service's own code on the leaking stack, when memray
    #: named one.
    site: str | None = None


class LeakRecord(msgspec.Struct):
    """One profile's memray leak run (``dir`` relative to ``results.json``)."""

    dir: str
    cycles: int
    warmup: int
    requests: int
    leaking_components: list[str]
    evidence: list[LeakEvidence]
    peak_heap_mb: float | None
    peak_rss_traced_mb: float | None
    heap_slope_mb_per_10k_requests: float | None
    #: After the workload drained, minus the baseline after warm-up (fds, asyncio tasks,
    #: the service's connections in ``pg_stat_activity``).
    leftover: dict[str, float]
    flamegraph: str | None


class StatementCount(msgspec.Struct):
    """Statements (and auth lookups) one request of ``endpoint`` sent, cold and steady,
    and the size of its answer."""

    endpoint: str
    first: int
    steady: float
    auth_lookups: float
    #: Mean body size of the steady requests (bytes).
    response_bytes: float = 0.0
    #: Of this endpoint's writes, those the next read of the deal did not show.
    stale_reads: int = 0


class ProfileRecord(msgspec.Struct):
    profile: str
    test_faults: list[str] = []
    load: LoadRecord | None = None
    leaks: LeakRecord | None = None
    statements: list[StatementCount] = []


class BenchRow(msgspec.Struct):
    """One row of the benchmark table (:mod:`sixty_core.benchkit.summary`)."""

    benchmark: str
    side: str
    median_us: float | None
    iqr_us: float | None
    cpu_us: float | None
    statements: float | None
    allocations: float | None
    other: str
    ratio: str


class BenchRecord(msgspec.Struct):
    dir: str
    quick: bool
    rows: list[BenchRow]


class Method(msgspec.Struct):
    """How the figures were made: what a reader needs to repeat or to distrust them."""

    scenario: Scenario
    shape: str
    quick: bool
    leak_cycles: int
    leak_warmup: int
    db_backend: str
    #: Whether every profile ran on its own copy of one seeded template database.
    template_clone: bool


class Fingerprint(msgspec.Struct):
    """The environment a run measured. Two results compare only when ``comparable_key``
    agrees (same hardware, interpreter, key packages, Postgres and backend)."""

    cpu_model: str
    cores: int
    memory_gb: float
    system: str
    python: str
    packages: dict[str, str]
    postgres: str
    db_backend: str
    git_commit: str
    git_dirty: bool

    def comparable_key(self) -> dict[str, object]:
        return {
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "python": self.python,
            "packages": self.packages,
            "postgres": self.postgres,
            "db_backend": self.db_backend,
        }


class Step(msgspec.Struct, array_like=True):
    name: str
    seconds: float


class Results(msgspec.Struct):
    schema: str
    created_at: str
    fingerprint: Fingerprint
    method: Method
    profiles: list[ProfileRecord]
    bench: BenchRecord | None = None
    #: The growth curves and load sweep, when the run was asked for them.
    scaling: ScalingRecord | None = None
    #: The reliability scenarios and scorecard, when the run was asked for them.
    reliability: ReliabilityRecord | None = None
    steps: list[Step] = []
    wall_s: float = 0.0

    def profile(self, name: str) -> ProfileRecord | None:
        return next((p for p in self.profiles if p.profile == name), None)


def encode(results: Results) -> bytes:
    return msgspec.json.format(msgspec.json.encode(results), indent=1) + b"\n"


def write(results: Results, path: Path) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed into place)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(encode(results))
    partial.replace(path)


class _Header(msgspec.Struct):
    schema: str = ""


def read(path: Path) -> Results:
    """The results at ``path``; ResultsError naming the file and the problem otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        header = msgspec.json.decode(data, type=_Header)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ResultsError(f"{path}: not a results file (corrupt JSON: {exc})") from None
    name, _, version = header.schema.partition("/")
    if name != SCHEMA_NAME or not version.isdigit():
        raise ResultsError(
            f"{path}: not a sixty results file (schema {header.schema or 'missing'!r}, "
            f"expected {SCHEMA!r})"
        )
    if int(version) > SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: schema version {version} is newer than this sixty understands "
            f"({SCHEMA_VERSION}); upgrade sixty to read it"
        )
    try:
        return msgspec.json.decode(data, type=Results)
    except msgspec.ValidationError as exc:
        raise ResultsError(f"{path}: does not match schema {SCHEMA}: {exc}") from None
