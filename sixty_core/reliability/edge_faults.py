"""Faults of the edge upstream that creates deals (RELIABILITY.md §1B).

Creates carry an ``Idempotency-Key`` and a unique name, so the database can be asked how
many rows each accepted request wrote: exactly one (guarantee 7). Every create must answer
within the edge deadline plus one database call (guarantee 14), marked degraded when the
fallback served it.
"""

from __future__ import annotations

import asyncio
import time

from sixty_core.reliability.driving import (
    baseline,
    check_exactly_once,
    check_leaks,
    created_deal,
    keyed_create,
    run_tag,
)
from sixty_core.reliability.outcome import Trial
from sixty_core.reliability.pool_faults import EPSILON_S, RECOVERY_BUDGET_S
from sixty_core.reliability.stack import Stack
from sixty_core.reliability.toxics import Latency, LimitData

DEGRADED_HEADER = "x-sixty-degraded"


#: The fallback insert on a healthy database: one short transaction.
FALLBACK_INSERT_S = 1.0


def _create_budget_s(stack: Stack) -> float:
    """One create's promise with the database healthy: the edge deadline, then the
    fallback's insert."""
    return stack.settings.edge_deadline_s + FALLBACK_INSERT_S


async def _creates(
    stack: Stack, trial: Trial, prefix: str, count: int, *, concurrent: bool = True
) -> list[tuple[str, int, bool]]:
    """``count`` creates by owner 1 named ``prefix-i`` with key ``prefix-i``: per create,
    (name, status, degraded)."""
    owner = stack.user(1)

    async def one(i: int) -> tuple[str, int, bool]:
        name = f"{prefix}-{i}"
        status, response = await keyed_create(stack, trial, owner, name)
        degraded = response is not None and DEGRADED_HEADER in response.headers
        if status == 201 and response is not None:
            trial.expect(
                created_deal(stack, response.json()) is not None, f"{name}: no deal in 201"
            )
        return name, status, degraded

    if concurrent:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    return [await one(i) for i in range(count)]


async def _exactly_once(
    stack: Stack, trial: Trial, prefix: str, answers: list[tuple[str, int, bool]]
) -> None:
    await check_exactly_once(stack, trial, prefix, {name: status for name, status, _ in answers})


def _within_budget(stack: Stack, trial: Trial) -> None:
    budget = _create_budget_s(stack)
    trial.record(deadline_ms=budget * 1000)
    slowest = max(trial.latencies_ms, default=0.0) / 1000
    trial.expect(
        slowest <= budget + EPSILON_S, f"slowest create took {slowest:.1f} s (> {budget:.1f} s)"
    )


def _degraded_answers(trial: Trial, answers: list[tuple[str, int, bool]], why: str) -> None:
    statuses = sorted({status for _, status, _ in answers})
    trial.expect(statuses == [201], f"with the edge {why}, creates answered {statuses}")
    degraded = sum(1 for _, status, d in answers if status == 201 and d)
    trial.record(degraded=degraded, upstream_failures=len(answers))
    trial.expect(
        degraded == len(answers),
        f"{len(answers) - degraded} of {len(answers)} fallback answers not marked degraded",
    )


async def upstream_errors(stack: Stack, trial: Trial) -> None:
    """E1: the edge answers 503 to every create; the fallback serves each, marked
    degraded, exactly once."""
    prefix = f"e1-{run_tag()}"
    await stack.set_edge_faults(failure_rate=1.0)
    answers = await _creates(stack, trial, prefix, 10)
    _degraded_answers(trial, answers, "failing")
    _within_budget(stack, trial)
    await _exactly_once(stack, trial, prefix, answers)


async def upstream_hangs(stack: Stack, trial: Trial) -> None:
    """E2: the edge accepts and never answers; the fallback serves within the deadline and
    no task, connection or fd is left waiting on the edge."""
    prefix = f"e2-{run_tag()}"
    before = await baseline(stack)
    await stack.set_edge_faults(hang_probability=1.0)
    answers = await _creates(stack, trial, prefix, 5)
    _degraded_answers(trial, answers, "hanging")
    _within_budget(stack, trial)
    await _exactly_once(stack, trial, prefix, answers)
    await stack.set_edge_faults()
    await check_leaks(stack, trial, before)


async def upstream_slow(stack: Stack, trial: Trial) -> None:
    """E3: every byte to and from the edge is 3x the deadline late; the deadline holds,
    and the edge's late write and the fallback's land as one row."""
    prefix = f"e3-{run_tag()}"
    delay_ms = stack.settings.edge_deadline_s * 3000
    stack.edge_proxy.set_toxics(Latency(ms=delay_ms))
    try:
        answers = await _creates(stack, trial, prefix, 5)
    finally:
        stack.edge_proxy.clear()
    _degraded_answers(trial, answers, "slow")
    _within_budget(stack, trial)
    await asyncio.sleep(delay_ms / 1000 + 0.5)  # let any late edge write land first
    await _exactly_once(stack, trial, prefix, answers)


async def upstream_truncated(stack: Stack, trial: Trial) -> None:
    """E4: the edge writes the deal but its answer is cut after 100 bytes; the service
    rejects the partial body, falls back, and the deal still exists once."""
    prefix = f"e4-{run_tag()}"
    stack.edge_proxy.set_toxics(LimitData(bytes=100))
    try:
        answers = await _creates(stack, trial, prefix, 5)
    finally:
        stack.edge_proxy.clear()
    _degraded_answers(trial, answers, "truncating answers")
    _within_budget(stack, trial)
    await _exactly_once(stack, trial, prefix, answers)


async def retry_storm(stack: Stack, trial: Trial) -> None:
    """E5: the edge fails everything; once the breaker opens, calls to it stop (fewer
    edge calls than creates), and after it heals a create goes through half-open."""
    prefix = f"e5-{run_tag()}"
    await stack.set_edge_faults(failure_rate=1.0)
    before = (await stack.edge_stats())["edge_requests"]
    creates = 30
    answers = await _creates(stack, trial, prefix, creates, concurrent=False)
    calls = (await stack.edge_stats())["edge_requests"] - before
    trial.record(upstream_failures=calls)
    trial.expect(
        calls < creates,
        f"{calls} edge calls for {creates} creates against a failing edge (no breaker)",
    )
    await _exactly_once(stack, trial, prefix, answers)
    await stack.set_edge_faults()
    healed = await _first_edge_served(stack, trial, prefix, within_s=20.0)
    trial.record(recovery_s=healed)
    trial.expect(
        healed is not None and healed <= RECOVERY_BUDGET_S,
        "after the edge healed, the first create it served came "
        f"{'never (20 s)' if healed is None else f'{healed:.1f} s later'}",
    )


async def _first_edge_served(
    stack: Stack, trial: Trial, prefix: str, *, within_s: float
) -> float | None:
    """Seconds until a create is served by the edge itself (not degraded), or None."""
    owner = stack.user(1)
    started = time.monotonic()
    attempt = 0
    while time.monotonic() - started < within_s:
        attempt += 1
        name = f"{prefix}-heal-{attempt}"
        status, response = await keyed_create(stack, trial, owner, name)
        if status == 201 and response is not None and DEGRADED_HEADER not in response.headers:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    return None


async def fallback_writes_once(stack: Stack, trial: Trial) -> None:
    """E6: a mixed failing and hanging edge under concurrent creates, each retried by its
    client with the same key until accepted; every accepted create is one row."""
    prefix = f"e6-{run_tag()}"
    await stack.set_edge_faults(failure_rate=0.4, hang_probability=0.2, seed=6)
    owner = stack.user(1)

    async def until_accepted(i: int) -> tuple[str, int, bool]:
        name = f"{prefix}-{i}"
        status, degraded = 0, False
        for _ in range(3):
            status, response = await keyed_create(stack, trial, owner, name)
            degraded = response is not None and DEGRADED_HEADER in response.headers
            if status == 201:
                break
        return name, status, degraded

    answers = list(await asyncio.gather(*(until_accepted(i) for i in range(20))))
    await stack.set_edge_faults()
    accepted = sum(1 for _, s, _ in answers if s == 201)
    trial.expect(accepted == len(answers), f"{len(answers) - accepted} creates never accepted")
    await _exactly_once(stack, trial, prefix, answers)
