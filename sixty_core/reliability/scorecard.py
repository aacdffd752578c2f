"""``reliability.json`` (schema ``sixty.reliability/1``): every scenario's outcome per
profile, and the scorecard of RELIABILITY.md §4 summed from them.

The outcomes are the record; :func:`scorecard` derives the figures from them, so a reader
can recompute every number in the table from the findings beside it.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from sixty_core.errors import SixtyError
from sixty_core.reliability.outcome import FAULT_KINDS, Outcome

SCHEMA = "sixty.reliability/1"

#: Which leak names count as which scorecard figure.
_CONNECTIONS = ("pool_slots", "pool_waiters", "backends", "idle_in_transaction")


class Scorecard(msgspec.Struct, kw_only=True):
    """One profile's figures; ``None`` when no scenario run measured it."""

    profile: str
    scenarios_passed: int
    scenarios_run: int
    faults_survived: int
    faults_attempted: int
    deadline_overshoot_ms: float | None
    leaked_connections: int
    leaked_tasks: int
    leaked_fds: int
    recovery_s: float | None
    rows_lost: int | None
    rows_duplicated: int | None
    stale_reads: int | None
    loader_calls_per_key: int | None
    cross_tenant_accesses: int | None
    cross_tenant_cases: int | None
    bad_inputs: int | None
    raw_server_errors: int
    injection_findings: int | None = None
    sql_call_sites: int | None = None


class ReliabilityRecord(msgspec.Struct, kw_only=True):
    schema: str
    created_at: str
    profiles: list[str]
    quick: bool
    outcomes: list[Outcome]
    scorecards: list[Scorecard]
    #: The static scan of the package's SQL call sites (guarantee 13), one line per finding.
    sql_findings: list[str] = []
    sql_call_sites: int | None = None
    wall_s: float = 0.0

    def outcomes_of(self, profile: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.profile == profile]


def _total(values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _most(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def scorecard(
    profile: str,
    outcomes: list[Outcome],
    *,
    sql_call_sites: int | None = None,
    sql_findings: int | None = None,
) -> Scorecard:
    """The §4 figures of ``profile`` from its outcomes."""
    mine = [o for o in outcomes if o.profile == profile]
    faults = [o for o in mine if o.kind in FAULT_KINDS]
    recoveries = [o.recovery_s for o in mine]
    # A scenario that never recovered counts as missing recovery, not as a fast one.
    never = any(o.scenario in RECOVERY_SCENARIOS and o.recovery_s is None for o in mine)
    loader = [o.loader_calls for o in mine]
    return Scorecard(
        profile=profile,
        scenarios_passed=sum(o.passed for o in mine),
        scenarios_run=len(mine),
        faults_survived=sum(o.passed for o in faults),
        faults_attempted=len(faults),
        deadline_overshoot_ms=_most([o.overshoot_ms for o in mine]),
        leaked_connections=sum(o.leaked.get(k, 0) for o in mine for k in _CONNECTIONS),
        leaked_tasks=sum(o.leaked.get("tasks", 0) for o in mine),
        leaked_fds=sum(o.leaked.get("fds", 0) for o in mine),
        recovery_s=None if never else _most(recoveries),
        rows_lost=_total([o.rows_lost for o in mine]),
        rows_duplicated=_total([o.rows_duplicated for o in mine]),
        stale_reads=_total([o.stale_reads for o in mine]),
        loader_calls_per_key=max((v for v in loader if v is not None), default=None),
        cross_tenant_accesses=_total([o.cross_tenant for o in mine]),
        cross_tenant_cases=_total([o.cross_tenant_cases for o in mine]),
        bad_inputs=_total([o.bad_inputs for o in mine]),
        raw_server_errors=sum(o.server_errors for o in mine),
        injection_findings=sql_findings,
        sql_call_sites=sql_call_sites,
    )


#: Scenarios that measure a recovery time; a None there means "never recovered".
RECOVERY_SCENARIOS = frozenset({"P8", "P8R", "P10", "E5"})


def write(record: ReliabilityRecord, path: Path) -> None:
    """Write ``path`` whole or not at all."""
    from sixty_core.harness.rundir import write_whole

    write_whole({path: msgspec.json.format(msgspec.json.encode(record), indent=1) + b"\n"})


def read(path: Path) -> ReliabilityRecord:
    """The record at ``path``; SixtyError naming the file and the problem otherwise."""
    try:
        record = msgspec.json.decode(path.read_bytes(), type=ReliabilityRecord)
    except FileNotFoundError:
        raise SixtyError(f"{path}: no such reliability file") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SixtyError(f"{path}: not a sixty reliability file ({exc})") from None
    if record.schema != SCHEMA:
        raise SixtyError(f"{path}: schema {record.schema!r}, this sixty reads {SCHEMA!r}")
    return record
