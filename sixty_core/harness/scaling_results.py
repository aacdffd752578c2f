"""``scale.json``: the growth curves and load sweeps of ``sixty scale`` (schema
``sixty.scale/1``), also carried in ``results.json`` when ``sixty run`` ran the sweeps.

Every point traces to a run folder kept beside the file (``dir``): the load run's raw
samples and time series, and the statement probe's counts.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from sixty_core.errors import SixtyError
from sixty_core.load.scenario import Scenario

SCHEMA = "sixty.scale/1"

#: ``sixty scale``'s defaults (here, not in the runner, so ``--help`` stays light).
DEFAULT_SCALES = (1, 10, 100)
#: Each scale's fixed scenario: the standard one, this long.
DEFAULT_DURATION_S = 20.0
DEFAULT_STEP_S = 20.0
DEFAULT_P99_BUDGET_MS = 1000.0

#: Metrics of the data-size sweep, with their units, in the order a report shows them.
CURVE_METRICS: dict[str, str] = {
    "p50_ms": "ms",
    "p99_ms": "ms",
    "rps": "req/s",
    "statements": "statements / request",
    "response_bytes": "bytes / response",
    "peak_rss_mb": "MB",
}


class Where(msgspec.Struct):
    """Where a sweep's parts ran: the load (local Locust, how many workers), the service
    (started here, or a URL given with ``--host``) and the database (its backend, or a
    DSN given with ``--dsn``, password removed)."""

    load: str
    service: str
    database: str


class GrowthPoint(msgspec.Struct):
    """One metric at one seed scale; ``low``/``high`` its 95% interval when it has one."""

    scale: int
    deals: int
    value: float | None
    low: float | None = None
    high: float | None = None
    dir: str = ""


class GrowthCurve(msgspec.Struct):
    """One metric of one profile (and one endpoint, for per-endpoint metrics) against the
    deal count, with its fitted exponent (see :mod:`sixty_core.harness.growth`)."""

    profile: str
    metric: str
    endpoint: str | None
    unit: str
    points: list[GrowthPoint]
    exponent: float | None
    low: float | None
    high: float | None
    growth: str


class StepPoint(msgspec.Struct):
    """One step of a load sweep, over its settled window."""

    users: int
    window_s: float
    requests: int
    failures: int
    #: Every request per second, and the successful ones (what saturation is judged by:
    #: a shed request is answered fast and adds nothing).
    rps: float
    ok_rps: float
    p50_ms: float | None
    p99_ms: float | None
    p99_low: float | None
    p99_high: float | None


class LoadSweep(msgspec.Struct):
    """One profile's load sweep: its steps, the saturation step (None: not reached) and
    the best good throughput (successful req/s) whose p99 met the budget."""

    profile: str
    scale: int
    step_s: float
    settle_s: float
    dir: str
    steps: list[StepPoint]
    saturation_users: int | None
    p99_budget_ms: float
    best_rps_within_budget: float | None
    best_users_within_budget: int | None


class ScalingRecord(msgspec.Struct):
    schema: str
    created_at: str
    scenario: Scenario
    scales: list[int]
    profiles: list[str]
    where: Where
    curves: list[GrowthCurve] = []
    sweeps: list[LoadSweep] = []
    wall_s: float = 0.0

    def curve(self, profile: str, metric: str, endpoint: str | None = None) -> GrowthCurve | None:
        return next(
            (
                c
                for c in self.curves
                if c.profile == profile and c.metric == metric and c.endpoint == endpoint
            ),
            None,
        )


def write(record: ScalingRecord, path: Path) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed into place)."""
    from sixty_core.harness.rundir import write_whole

    write_whole({path: msgspec.json.format(msgspec.json.encode(record), indent=1) + b"\n"})


def read(path: Path) -> ScalingRecord:
    """The sweep at ``path``; SixtyError naming the file and the problem otherwise."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=ScalingRecord)
    except FileNotFoundError:
        raise SixtyError(f"{path}: no such scale file") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SixtyError(f"{path}: not a sixty scale file ({exc})") from None
