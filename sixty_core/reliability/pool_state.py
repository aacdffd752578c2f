"""The service's own pool under abuse (RELIABILITY.md P4, P5, P6, P14).

These borrow connections from the running service's :class:`~sixty_core.db.pool.Pool`
(the profile's sizes, timeouts and reset), not from a pool built for the test, and check
both sides afterwards: the pool's free slots and waiters, and the server's
``pg_stat_activity`` rows for the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import asyncpg

from sixty_core.errors import SixtyError
from sixty_core.reliability.driving import baseline, check_leaks, own_deals
from sixty_core.reliability.outcome import Trial
from sixty_core.reliability.stack import Stack

#: What a cancelled or refused borrower may see instead of a connection.
_REFUSED = (asyncio.CancelledError, SixtyError, asyncpg.PostgresError, OSError)


async def clean_handover(stack: Stack, trial: Trial) -> None:
    """P4: a connection left in an open or aborted transaction, or with transaction-scoped
    settings, is lent to the next borrower clean; a broken one is discarded, never reused.

    (Session-level ``SET`` survives the optimized pool's rollback-only reset by design: no
    handler sets one on a pooled connection; sixty_core/db/pool.py documents the trade.)"""
    before = await baseline(stack)
    pool = stack.components.pool
    checks: list[tuple[str, bool]] = []
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("SELECT set_config('app.user_id', 'someone', true)")
        await conn.execute("SET LOCAL work_mem = '1111kB'")
    async with pool.acquire() as conn:
        checks.append(("an open transaction reached the next borrower", conn.is_in_transaction()))
        checks.append(
            (
                "a transaction-scoped setting reached the next borrower",
                await conn.fetchval("SELECT current_setting('app.user_id', true)")
                not in ("", None),
            )
        )
        await conn.execute("BEGIN")
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute("SELECT * FROM no_such_table")
    async with pool.acquire() as conn:
        checks.append(
            ("an aborted transaction reached the next borrower", conn.is_in_transaction())
        )
        checks.append(
            ("the next borrower could not run a statement", await conn.fetchval("SELECT 1") != 1)
        )
    killed_pid = None
    with contextlib.suppress(*_REFUSED):
        async with pool.acquire() as conn:
            killed_pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    for _ in range(pool.settings.max_size):
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT pg_backend_pid()") == killed_pid:
                checks.append(("a connection whose backend died was lent again", True))
                break
    for finding, failed in checks:
        trial.expect(not failed, finding)
    trial.requests += 5 + pool.settings.max_size
    await check_leaks(stack, trial, before)


async def cancelled_waiters(stack: Stack, trial: Trial, *, waiters: int = 10) -> None:
    """P5: every slot held, waiters queued, then the waiters cancelled (one just handed a
    slot): no slot is lost, no waiter remains, and new borrowers get connections."""
    before = await baseline(stack)
    pool = stack.components.pool
    holders = contextlib.AsyncExitStack()
    for _ in range(pool.settings.max_size):
        await holders.enter_async_context(pool.acquire())

    async def wait_one() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    queued = [asyncio.create_task(wait_one()) for _ in range(waiters)]
    await asyncio.sleep(0.2)
    waiting = int(pool.get_stats()["pool_waiting"])
    await holders.aclose()  # hands a slot to the oldest waiter...
    for task in queued:  # ...which is cancelled before it runs
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    trial.requests += waiters
    trial.expect(waiting > 0, "no waiter ever queued (the pool refused them all at once)")
    stats = pool.get_stats()
    trial.expect(stats["pool_waiting"] == 0, f"{stats['pool_waiting']} waiter(s) left queued")
    trial.expect(
        stats["pool_available"] == stats["pool_max_size"],
        f"{stats['pool_max_size'] - stats['pool_available']} slot(s) lost to cancelled waiters",
    )
    answers = await asyncio.gather(
        *(stack.call("GET", f"/api/deals?limit={300 + i}", stack.user(1)) for i in range(3))
    )
    trial.expect(
        all(r.status_code == 200 for r in answers), "requests failed after the cancellations"
    )
    await check_leaks(stack, trial, before)


async def cancellation_storm(stack: Stack, trial: Trial, *, workers: int = 60) -> None:
    """P6: 60 workers write through the service's pool; 40 are cancelled while they hold a
    connection mid-transaction or wait for one. Afterwards: every slot free, the server
    holds no idle-in-transaction session of the service, and the rows committed are
    exactly the workers that finished."""
    before = await baseline(stack)
    pool = stack.components.pool
    deals = await own_deals(stack, stack.user(1), workers)
    victims = set(random.Random(6).sample(range(len(deals)), 2 * len(deals) // 3))
    tag = f"p6-{time.monotonic_ns()}"
    finished: list[int] = []
    never = asyncio.Event()
    every_slot_parked = asyncio.Event()
    parked = 0

    async def worker(i: int) -> None:
        nonlocal parked
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE deals SET description = $1 WHERE id = $2::uuid", tag, deals[i]["id"]
            )
            if i in victims:
                parked += 1
                if parked >= min(pool.settings.max_size, len(victims)):
                    every_slot_parked.set()
                await never.wait()
        finished.append(i)

    tasks = [asyncio.create_task(worker(i)) for i in range(len(deals))]
    # Victims never finish on their own, so the slots fill with victims mid-transaction.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(every_slot_parked.wait(), 10)
    for i in victims:
        tasks[i].cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    trial.requests += len(tasks)
    # A worker refused by admission control (OverloadedError, a SixtyError) wrote nothing
    # and says so; anything else raised is a failure.
    errors = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError | SixtyError)
    ]
    trial.expect(not errors, f"{len(errors)} surviving worker(s) failed: {errors[:1]}")
    rows = await stack.rows("SELECT id::text AS id FROM deals WHERE description = $1", tag)
    written = {r["id"] for r in rows}
    done = {deals[i]["id"] for i in finished}
    lost, phantom = len(done - written), len(written - done)
    trial.record(rows_lost=lost, rows_duplicated=phantom)
    trial.expect(lost == 0, f"{lost} finished worker(s) whose write is not in the database")
    trial.expect(phantom == 0, f"{phantom} cancelled worker(s) whose write was committed")
    await check_leaks(stack, trial, before)


async def abandoned_transaction(stack: Stack, trial: Trial) -> None:
    """P14: a borrower stalls inside a transaction holding a row lock; the server ends the
    session after ``idle_in_transaction_session_timeout``, the lock is free again, and
    the pool discards the dead connection instead of lending it."""
    before = await baseline(stack)
    pool = stack.components.pool
    timeout_s = pool.settings.idle_in_transaction_timeout_ms / 1000
    if not trial.expect(timeout_s > 0, "the pool sets no idle_in_transaction_session_timeout"):
        return
    deal = (await own_deals(stack, stack.user(1), 1))[0]
    stalled = asyncio.Event()

    async def stall() -> None:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("SELECT 1 FROM deals WHERE id = $1::uuid FOR UPDATE", deal["id"])
            stalled.set()
            await asyncio.sleep(timeout_s + 2)
            await conn.fetchval("SELECT 1")  # the session is gone by now

    task = asyncio.create_task(stall())
    await stalled.wait()
    started = time.monotonic()
    async with stack.admin() as other:
        await other.execute(f"SET lock_timeout = '{int((timeout_s + 5) * 1000)}ms'")
        async with other.transaction():
            await other.execute("SELECT 1 FROM deals WHERE id = $1::uuid FOR UPDATE", deal["id"])
    freed_after = time.monotonic() - started
    outcome = await asyncio.gather(task, return_exceptions=True)
    trial.requests += 2
    trial.expect(
        freed_after <= timeout_s + 2,
        f"the stalled transaction's lock was held {freed_after:.1f} s (timeout {timeout_s:g} s)",
    )
    trial.expect(
        isinstance(outcome[0], BaseException), "the stalled borrower's session was not ended"
    )
    await check_leaks(stack, trial, before)
