"""One scenario's outcome, and the :class:`Trial` a scenario fills while it runs.

A scenario states guarantees as checks (``trial.expect(ok, finding)``); every failed check
is a finding, one line a reader can act on, and the outcome passes only with none. Beside
the verdict it records the figures the scorecard sums (RELIABILITY.md §4): latencies
against the promised deadline, leaked resources, recovery time, rows lost or duplicated,
stale reads, loader calls, cross-tenant accesses. ``None`` means "not measured by this
scenario", never zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec

#: Scenario kinds, in scorecard order: P/E faults count as "faults survived".
KINDS = ("pool", "edge", "cache", "auth", "input", "memory")
FAULT_KINDS = ("pool", "edge")


class Outcome(msgspec.Struct, kw_only=True):
    """What one scenario found on one profile."""

    scenario: str
    title: str
    kind: str
    profile: str
    passed: bool
    findings: list[str]
    seconds: float
    requests: int = 0
    #: 5xx answers that were not a mapped 503/504 (raw server errors).
    server_errors: int = 0
    deadline_ms: float | None = None
    max_latency_ms: float | None = None
    leaked: dict[str, int] = {}
    recovery_s: float | None = None
    rows_lost: int | None = None
    rows_duplicated: int | None = None
    stale_reads: int | None = None
    loader_calls: int | None = None
    cross_tenant: int | None = None
    cross_tenant_cases: int | None = None
    bad_inputs: int | None = None
    degraded: int | None = None
    upstream_failures: int | None = None

    @property
    def overshoot_ms(self) -> float | None:
        """How far the slowest call went past the promise (0 when within it)."""
        if self.deadline_ms is None or self.max_latency_ms is None:
            return None
        return max(0.0, self.max_latency_ms - self.deadline_ms)


@dataclass
class Trial:
    """The record a running scenario writes into; :meth:`outcome` seals it."""

    scenario: str
    title: str
    kind: str
    profile: str
    started: float = field(default_factory=time.monotonic)
    findings: list[str] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)
    requests: int = 0
    server_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def expect(self, ok: bool, finding: str) -> bool:
        """Record ``finding`` unless ``ok``; returns ``ok`` (so a scenario can stop early)."""
        if not ok:
            self.findings.append(finding)
        return ok

    def answered(self, status: int, latency_s: float) -> None:
        """Count one answered request; a 5xx other than a mapped 503/504 is a raw error."""
        self.requests += 1
        self.latencies_ms.append(latency_s * 1000.0)
        if status >= 500 and status not in (503, 504):
            self.server_errors += 1

    def record(self, **figures: object) -> None:
        """Set :class:`Outcome` figures by name (``rows_lost=0``, ``recovery_s=1.2``...)."""
        unknown = set(figures) - set(Outcome.__struct_fields__)
        if unknown:
            raise ValueError(f"not an outcome figure: {sorted(unknown)}")
        self.figures.update(figures)

    def outcome(self) -> Outcome:
        figures = dict(self.figures)
        if self.latencies_ms and "max_latency_ms" not in figures:
            figures["max_latency_ms"] = max(self.latencies_ms)
        if self.server_errors:
            self.findings.append(f"{self.server_errors} raw 5xx answer(s) (not a mapped 503/504)")
        return msgspec.convert(
            {
                "scenario": self.scenario,
                "title": self.title,
                "kind": self.kind,
                "profile": self.profile,
                "passed": not self.findings,
                "findings": list(self.findings),
                "seconds": time.monotonic() - self.started,
                "requests": self.requests,
                "server_errors": self.server_errors,
                **figures,
            },
            Outcome,
        )
