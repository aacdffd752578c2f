"""The scenarios ``sixty reliability`` runs, by RELIABILITY.md id, each on a fresh stack.

``quick`` marks the subset that runs in seconds (``--quick`` and ``make test``); the rest
wait out real timeouts (a black hole lasts a whole ``command_timeout``) or the breaker's
reset, and run under the ``slow`` marker and in ``sixty reliability``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sixty_core.reliability import (
    boundaries,
    correctness,
    edge_faults,
    fuzzing,
    pool_faults,
    pool_state,
)
from sixty_core.reliability.outcome import Trial
from sixty_core.reliability.stack import Stack

Run = Callable[[Stack, Trial], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    kind: str
    run: Run
    quick: bool
    #: Other RELIABILITY.md ids the same run also proves.
    also: tuple[str, ...] = ()


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "P1", "idle pooled connections killed", "pool", pool_faults.idle_connections_killed, True
    ),
    Scenario(
        "P2",
        "backends killed mid-query",
        "pool",
        pool_faults.backend_killed_mid_query,
        True,
        ("P6",),
    ),
    Scenario("P4", "connections handed over clean", "pool", pool_state.clean_handover, True),
    Scenario("P5", "waiters cancelled", "pool", pool_state.cancelled_waiters, True),
    Scenario(
        "P6", "cancellation storm mid-transaction", "pool", pool_state.cancellation_storm, True
    ),
    Scenario("P7", "pool exhausted by slow queries", "pool", pool_faults.overload, True),
    Scenario("P8", "database down, then back", "pool", pool_faults.database_down, True, ("P11",)),
    Scenario(
        "P8R", "database server restarts (crash)", "pool", pool_faults.database_restart, False
    ),
    Scenario("P10", "database black-holed", "pool", pool_faults.black_hole, False),
    Scenario("P14", "abandoned transaction", "pool", pool_state.abandoned_transaction, False),
    Scenario("P16", "shutdown under load", "pool", pool_faults.shutdown_under_load, True),
    Scenario("E1", "edge answers 5xx", "edge", edge_faults.upstream_errors, True),
    Scenario("E2", "edge hangs", "edge", edge_faults.upstream_hangs, True),
    Scenario("E3", "edge slow (3x the deadline)", "edge", edge_faults.upstream_slow, False),
    Scenario("E4", "edge answer truncated", "edge", edge_faults.upstream_truncated, True),
    Scenario("E5", "retry storm against a failing edge", "edge", edge_faults.retry_storm, False),
    Scenario(
        "E6",
        "mixed edge faults with client retries",
        "edge",
        edge_faults.fallback_writes_once,
        True,
    ),
    Scenario(
        "C1",
        "read-your-writes through the caches",
        "cache",
        correctness.read_your_writes,
        True,
        ("C7",),
    ),
    Scenario(
        "C2", "writers racing loads (1,000 writes)", "cache", boundaries.racing_writers, False
    ),
    Scenario("C3", "200 concurrent cold reads", "cache", correctness.stampede, True),
    Scenario("C4", "a failed load is not cached", "cache", boundaries.failed_load_not_cached, True),
    Scenario(
        "C5", "caches stay within entries and bytes", "cache", boundaries.bounded_caches, False
    ),
    Scenario("S1", "logout revokes a cached session", "auth", correctness.logout_revokes, True),
    Scenario(
        "S3", "missing, malformed, forged tokens", "auth", correctness.bad_tokens, True, ("I5",)
    ),
    Scenario("S2", "tokens one edit from a cached one", "auth", boundaries.token_look_alikes, True),
    Scenario("S5", "bad-token spray", "auth", correctness.token_spray, False),
    Scenario("I1", "every operation fuzzed", "input", fuzzing.fuzz_every_operation, False, ("I3",)),
    Scenario("I7", "tenant isolation (BOLA matrix)", "input", correctness.tenant_isolation, True),
    Scenario("I10", "page size and offset caps", "input", boundaries.page_limits, True),
    Scenario("I11", "concurrent writers of one deal", "input", correctness.lost_updates, True),
    Scenario(
        "I12",
        "retried creates under connection resets",
        "input",
        correctness.idempotent_retries,
        True,
    ),
    Scenario("M2", "refleak rounds", "memory", correctness.refleak_rounds, False),
)

BY_ID = {scenario.id: scenario for scenario in SCENARIOS}


def select(ids: str | None, *, quick: bool) -> tuple[Scenario, ...]:
    """The scenarios named in ``ids`` (comma-separated, case-insensitive), else every one
    (only the quick ones with ``quick``); ValueError naming an unknown id."""
    if ids:
        wanted = [part.strip().upper() for part in ids.split(",") if part.strip()]
        unknown = [w for w in wanted if w not in BY_ID]
        if unknown:
            raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(BY_ID)}")
        return tuple(BY_ID[w] for w in dict.fromkeys(wanted))
    return tuple(s for s in SCENARIOS if s.quick or not quick)
