"""Database-side faults against the running service (RELIABILITY.md §1A).

Each function drives one scenario on a fresh :class:`Stack` and states its guarantee as
checks on ``trial``: the answers (mapped 503, never a raw 5xx or a hang), the deadline
(acquire + statement + release, :meth:`Stack.deadline_s`), and the resources afterwards
(free pool slots, the service's rows in ``pg_stat_activity``, idle-in-transaction
sessions, tasks, file descriptors) back at their baseline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from sixty_core.db.provision import connect
from sixty_core.reliability.driving import baseline, check_leaks, own_deals, timed, warm
from sixty_core.reliability.outcome import Trial
from sixty_core.reliability.stack import Stack
from sixty_core.reliability.toxics import BlackHole, Latency

#: Slack on every promised deadline: scheduling on a shared 2-core machine.
EPSILON_S = 1.0
#: A service must answer again this soon after the database comes back (guarantee 4).
RECOVERY_BUDGET_S = 5.0


async def _recovery(
    stack: Stack, trial: Trial, *, within_s: float = 30.0, deal_id: str | None = None
) -> float | None:
    """Seconds from now until a write succeeds (PATCH of an own deal), or None. Give
    ``deal_id`` when the database may not answer the harness's own lookup yet."""
    owner = stack.user(1)
    deal = {"id": deal_id} if deal_id else (await own_deals(stack, owner, 1))[0]
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        trial.requests += 1
        try:
            response = await asyncio.wait_for(
                stack.call("PATCH", f"/api/deals/{deal['id']}", owner, json={"probability": 40}),
                timeout=max(0.1, within_s - (time.monotonic() - started)),
            )
        except (TimeoutError, OSError):
            continue
        if response.status_code == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


async def idle_connections_killed(stack: Stack, trial: Trial) -> None:
    """P1: the server kills every idle pooled connection; the next request succeeds, or
    fails once with a mapped 503 and the retry succeeds."""
    before = await baseline(stack)
    killed = await stack.terminate_backends(state="idle")
    trial.expect(killed > 0, "no idle pooled connection to kill (the pool kept none open)")
    owner = stack.user(1)
    statuses = []
    for limit in range(11, 21):  # distinct queries: each one reaches the database
        status, _, _ = await timed(stack, trial, "GET", f"/api/deals?limit={limit}", owner)
        statuses.append(status)
    failed = [s for s in statuses if s != 200]
    trial.expect(
        len(failed) <= 1 and all(s == 503 for s in failed),
        f"after {killed} idle connections were killed, requests answered {statuses}",
    )
    await check_leaks(stack, trial, before)


async def backend_killed_mid_query(stack: Stack, trial: Trial) -> None:
    """P2: backends killed while their statements wait on a row lock; each caller gets one
    mapped error, nothing is half-written and the pool loses no slot."""
    before = await baseline(stack)
    owner = stack.user(1)
    deals = await own_deals(stack, owner, 6)
    async with stack.admin() as blocker:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "SELECT 1 FROM deals WHERE id = ANY($1::uuid[]) FOR UPDATE", [d["id"] for d in deals]
        )
        writes = [
            asyncio.create_task(
                timed(stack, trial, "PATCH", f"/api/deals/{d['id']}", owner, json={"name": "p2"})
            )
            for d in deals
        ]
        waited = await _wait_for_lock_waiters(stack, len(deals))
        trial.expect(waited, f"the {len(deals)} writes never waited on the lock")
        killed = await stack.terminate_backends(state="active")
        await tx.rollback()
        answers = await asyncio.gather(*writes)
    statuses = [status for status, _, _ in answers]
    trial.expect(killed > 0, "no busy backend to kill")
    trial.expect(
        all(s in (200, 503) for s in statuses), f"killed mid-query, writes answered {statuses}"
    )
    names = {
        r["id"]: r["name"]
        for r in await stack.rows(
            "SELECT id::text AS id, name FROM deals WHERE id = ANY($1::uuid[])",
            [d["id"] for d in deals],
        )
    }
    acknowledged = {d["id"] for d, (s, _, _) in zip(deals, answers, strict=True) if s == 200}
    lost = sum(1 for i in acknowledged if names.get(i) != "p2")
    phantom = sum(1 for i, n in names.items() if n == "p2" and i not in acknowledged)
    trial.record(rows_lost=lost, rows_duplicated=phantom)
    trial.expect(lost == 0, f"{lost} acknowledged write(s) not in the database")
    trial.expect(phantom == 0, f"{phantom} write(s) answered as failed but committed")
    await check_leaks(stack, trial, before)


async def _wait_for_lock_waiters(stack: Stack, count: int, within_s: float = 10.0) -> bool:
    until = time.monotonic() + within_s
    while time.monotonic() < until:
        rows = await stack.rows(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1"
            " AND wait_event_type = 'Lock'",
            stack.settings.application_name,
        )
        if int(rows[0]["n"]) >= count:
            return True
        await asyncio.sleep(0.05)
    return False


async def overload(stack: Stack, trial: Trial) -> None:
    """P7: four times the pool's size in concurrent slow queries; every caller answers
    within the deadline (200 or a fast 503), and no slot is lost."""
    before = await baseline(stack)
    owner = stack.user(1)
    stack.db_proxy.set_toxics(Latency(ms=150))
    callers = 4 * stack.pool_settings.max_size
    try:
        answers = await asyncio.gather(
            *(
                timed(stack, trial, "GET", f"/api/deals?limit={100 + i}", owner)
                for i in range(callers)
            )
        )
    finally:
        stack.db_proxy.clear()
    statuses = [s for s, _, _ in answers]
    shed = statuses.count(503)
    trial.record(deadline_ms=stack.deadline_s() * 1000)
    trial.expect(
        all(s in (200, 503) for s in statuses),
        f"under overload answered {sorted(set(statuses))}",
    )
    slowest = max(t for _, t, _ in answers)
    trial.expect(
        slowest <= stack.deadline_s() + EPSILON_S,
        f"slowest caller took {slowest:.1f} s, past the {stack.deadline_s():.0f} s deadline",
    )
    trial.expect(shed < callers, "every caller was shed; none served")
    await check_leaks(stack, trial, before)


async def database_down(stack: Stack, trial: Trial) -> None:
    """P8/P11: the database goes away (refused, live connections reset) and comes back;
    while down, writes fail fast with 503; after, the service answers within 5 s without a
    restart."""
    before = await baseline(stack)
    owner = stack.user(1)
    deal = (await own_deals(stack, owner, 1))[0]
    stack.db_proxy.down()
    try:
        for attempt in range(5):
            status, _, _ = await timed(
                stack,
                trial,
                "PATCH",
                f"/api/deals/{deal['id']}",
                owner,
                json={"name": f"d{attempt}"},
            )
            trial.expect(status == 503, f"with the database down a write answered {status}")
        slowest = max(trial.latencies_ms) / 1000
        fast = stack.pool_settings.acquire_timeout_s + EPSILON_S
        trial.expect(
            slowest <= fast, f"with the database down a write took {slowest:.1f} s (> {fast:.0f} s)"
        )
    finally:
        await stack.db_proxy.up()
    recovered = await _recovery(stack, trial)
    trial.record(recovery_s=recovered, deadline_ms=fast * 1000)
    trial.expect(
        recovered is not None, "the service never answered again after the database came back"
    )
    if recovered is not None:
        trial.expect(
            recovered <= RECOVERY_BUDGET_S,
            f"recovered {recovered:.1f} s after the database came back"
            f" (> {RECOVERY_BUDGET_S:.0f} s)",
        )
    await check_leaks(stack, trial, before)


async def black_hole(stack: Stack, trial: Trial) -> None:
    """P10: packets to the database vanish (no RST). Every call returns within the
    deadline with a mapped error; once the path is back, writes succeed within 5 s."""
    before = await baseline(stack)
    owner = stack.user(1)
    deals = await own_deals(stack, owner, 3)
    stack.db_proxy.set_toxics(BlackHole())
    try:
        answers = await asyncio.gather(
            *(
                timed(stack, trial, "PATCH", f"/api/deals/{d['id']}", owner, json={"name": "bh"})
                for d in deals
            )
        )
    finally:
        stack.db_proxy.clear()
    budget = stack.deadline_s() + EPSILON_S
    trial.record(deadline_ms=stack.deadline_s() * 1000)
    statuses = [s for s, _, _ in answers]
    trial.expect(all(s in (503, 504) for s in statuses), f"black-holed writes answered {statuses}")
    slowest = max(t for _, t, _ in answers)
    trial.expect(slowest <= budget, f"a black-holed write took {slowest:.1f} s (> {budget:.0f} s)")
    recovered = await _recovery(stack, trial)
    trial.record(recovery_s=recovered)
    trial.expect(
        recovered is not None and recovered <= RECOVERY_BUDGET_S,
        f"after the black hole the first successful write came "
        f"{'never' if recovered is None else f'{recovered:.1f} s later'}",
    )
    # A floor connection opened into the hole waits out its connect timeout, then the
    # pool's refill backs off before trying again: allow that long for it to finish.
    refill_s = stack.pool_settings.acquire_timeout_s + 5.0
    await check_leaks(stack, trial, before, within_s=refill_s)


async def shutdown_under_load(stack: Stack, trial: Trial) -> None:
    """P16: the service is stopped with requests in flight; they are answered, the stop
    finishes within the drain bound, and the server holds no backend of the service."""
    await warm(stack)
    owner = stack.user(1)
    stack.db_proxy.set_toxics(Latency(ms=300))
    in_flight = [
        asyncio.create_task(timed(stack, trial, "GET", f"/api/deals?limit={200 + i}", owner))
        for i in range(10)
    ]
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await stack.stop()
    stopped_in = time.monotonic() - started
    stack.db_proxy.clear()
    answers = await asyncio.gather(*in_flight)
    statuses = [s for s, _, _ in answers]
    trial.expect(all(s == 200 for s in statuses), f"in-flight requests at shutdown: {statuses}")
    trial.expect(stopped_in <= 15.0, f"the stop took {stopped_in:.1f} s")
    # A closed socket takes the server a moment to notice: allow a second for it.
    for _ in range(10):
        backends, idle_tx = await stack.backends()
        if backends == 0:
            break
        await asyncio.sleep(0.1)
    trial.record(leaked={"backends": backends} if backends else {})
    trial.expect(backends == 0, f"{backends} backend(s) of the service left 1 s after shutdown")
    trial.expect(idle_tx == 0, f"{idle_tx} idle-in-transaction session(s) after shutdown")


async def database_restart(stack: Stack, trial: Trial) -> None:
    """P8 for real: the database server itself restarts. A backend is killed with SIGKILL,
    so the postmaster ends every session and runs crash recovery, as after an OOM kill.
    The service must answer again within 5 s, with no restart of its own, and leak
    nothing. Needs the server on this machine (the embedded one, or any local server
    whose backends this user may signal)."""
    before = await baseline(stack)
    deal = (await own_deals(stack, stack.user(1), 1))[0]
    victim_conn = await connect(stack.dsn)
    try:
        victim = int(await victim_conn.fetchval("SELECT pg_backend_pid()"))
        os.kill(victim, signal.SIGKILL)  # while its session is open: it must be alive
    except (ProcessLookupError, PermissionError) as exc:
        trial.expect(False, f"cannot restart the database from here ({type(exc).__name__})")
        return
    finally:
        victim_conn.terminate()
    recovered = await _recovery(stack, trial, deal_id=deal["id"])
    trial.record(recovery_s=recovered)
    trial.expect(
        recovered is not None and recovered <= RECOVERY_BUDGET_S,
        "after the database restarted, the first successful write came "
        f"{'never' if recovered is None else f'{recovered:.1f} s later'}",
    )
    await check_leaks(stack, trial, before, within_s=10.0)
