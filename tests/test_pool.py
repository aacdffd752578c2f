"""Pool contract against a real Postgres: lifecycle, faults P1, P2, P4-P7, P16, accounting, health.

Every test checks both sides: the pool's own counters and the server's ``pg_stat_activity``
filtered on a per-test ``application_name`` (pool counters alone can hide a leak).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from sixty_core.db.pool import (
    LEGACY_POOL,
    OPTIMIZED_POOL,
    Pool,
    PoolSettings,
    PoolState,
)
from sixty_core.db.provision import Database, connect
from sixty_core.errors import DatabaseUnavailableError, LifecycleError, OverloadedError
from tests.conftest import FakeClock

SMALL = PoolSettings(
    max_size=2,
    min_size=1,
    max_inactive_s=300,  # no idle expiry during a test
    acquire_timeout_s=10,
    statement_timeout_ms=10_000,
    command_timeout_s=10.0,
    max_waiting=None,
    fast_reset=False,
)


def small(**changes: Any) -> PoolSettings:
    return dataclasses.replace(SMALL, **changes)


@pytest.fixture
def app_name() -> str:
    return f"pooltest_{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture(loop_scope="session")
async def admin(pg_server: Database) -> AsyncIterator[asyncpg.Connection]:
    """An unpooled connection to the admin database, for looking at pg_stat_activity."""
    conn = await connect(pg_server.dsn)
    yield conn
    await conn.close()


async def backend_states(admin: asyncpg.Connection, app: str) -> list[str | None]:
    rows = await admin.fetch("SELECT state FROM pg_stat_activity WHERE application_name = $1", app)
    return [r["state"] for r in rows]


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], what: str, *, timeout_s: float = 10.0
) -> None:
    """Poll ``check`` until it holds (server-side effects are asynchronous); bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"never happened within {timeout_s} s: {what}")
        await asyncio.sleep(0.01)


async def select_one(pool: Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT 1"))


def assert_all_returned(pool: Pool) -> None:
    stats = pool.get_stats()
    assert (stats["pool_busy"], stats["pool_waiting"]) == (0, 0)
    assert stats["pool_available"] == stats["pool_max_size"]


# --- settings and lifecycle ----------------------------------------------------------------


def test_settings_reject_impossible_values() -> None:
    """PoolSettings refuses sizes, timeouts and bounds that cannot work, naming the value."""
    with pytest.raises(ValueError, match="min_size"):
        small(min_size=3)
    with pytest.raises(ValueError, match="max_size"):
        small(max_size=0, min_size=0)
    with pytest.raises(ValueError, match="max_waiting"):
        small(max_waiting=-1)
    with pytest.raises(ValueError, match="command_timeout_s"):
        small(command_timeout_s=0)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (LEGACY_POOL, ("15s", "15s")),  # ORIGINAL_SYSTEM.md §2.2
        (OPTIMIZED_POOL, ("12s", "10s")),  # §3.5
    ],
    ids=["legacy", "optimized"],
)
async def test_profile_pools_reach_the_server_with_their_timeouts(
    db_dsn: str, app_name: str, settings: PoolSettings, expected: tuple[str, str]
) -> None:
    """What the server enforces on each profile's connections: statement_timeout and
    idle_in_transaction_session_timeout, read back from the server itself."""
    pool = Pool(db_dsn, settings, application_name=app_name)
    async with pool, pool.acquire() as conn:
        seen = (
            await conn.fetchval("SHOW statement_timeout"),
            await conn.fetchval("SHOW idle_in_transaction_session_timeout"),
        )
    assert seen == expected


async def test_legacy_pool_lends_an_unpooled_connection_when_the_pool_fails(
    db_dsn: str, admin: asyncpg.Connection, app_name: str
) -> None:
    """getDbClient's fallback (§2.2): with every slot held past acquire_timeout_s, the next
    borrower gets a connection outside the pool, which is closed after its use."""
    settings = dataclasses.replace(
        LEGACY_POOL, max_size=1, min_size=1, acquire_timeout_s=0.2, unpooled_fallback=True
    )
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        async with pool.acquire() as held:
            held_pid = await held.fetchval("SELECT pg_backend_pid()")
            async with pool.acquire() as extra:
                extra_pid = await extra.fetchval("SELECT pg_backend_pid()")
                assert len(await backend_states(admin, app_name)) == 2  # past max_size
        stats = pool.get_stats()
        assert extra_pid != held_pid
        assert (stats["unpooled_connections"], stats["unpooled_open"]) == (1, 0)
        assert stats["acquire_timeouts"] == 1
        await eventually(
            lambda: _backends_are(admin, app_name, 1), "the unpooled connection was closed"
        )


async def test_optimized_pool_never_goes_past_its_size(db_dsn: str, app_name: str) -> None:
    """Without the fallback a borrower that finds no slot in time gets OverloadedError."""
    settings = dataclasses.replace(OPTIMIZED_POOL, max_size=1, min_size=1, acquire_timeout_s=0.1)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        async with pool.acquire():
            with pytest.raises(OverloadedError):
                await select_one(pool)
        assert pool.get_stats()["unpooled_connections"] == 0


async def test_connections_are_retired_after_max_queries(db_dsn: str, app_name: str) -> None:
    """node-postgres maxUses: a connection is replaced after max_queries queries."""
    async with Pool(db_dsn, small(max_size=1, max_queries=3), application_name=app_name) as pool:
        pids = []
        for _ in range(6):
            async with pool.acquire() as conn:
                pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
    assert len(set(pids)) >= 2, pids


async def test_every_statement_sent_is_counted_once(db_dsn: str, app_name: str) -> None:
    """statements_sent counts what reaches the server: a transaction's BEGIN and COMMIT
    and the default reset on release included."""
    async with Pool(db_dsn, small(max_size=1), application_name=app_name) as pool:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1")
        # BEGIN, SELECT 1, COMMIT, and the reset query on release.
        await eventually(lambda: pool.get_stats()["statements_sent"] == 4, "4 statements")


async def _backends_are(admin: asyncpg.Connection, app: str, count: int) -> bool:
    return len(await backend_states(admin, app)) == count


def test_constructor_does_no_io() -> None:
    """Building a pool for an unreachable server succeeds; stats read as empty."""
    pool = Pool("postgresql://nobody@127.0.0.1:1/nowhere", LEGACY_POOL)
    assert pool.state is PoolState.NEW
    stats = pool.get_stats()
    assert (stats["pool_size"], stats["acquires"], stats["pool_efficiency"]) == (0, 0, 0.0)
    assert pool.health_snapshot()["utilization"] == "0%"


async def test_wrong_transitions_raise_lifecycle_error(db_dsn: str, app_name: str) -> None:
    """Acquire before open or after close, double open and reopen raise LifecycleError."""
    pool = Pool(db_dsn, SMALL, application_name=app_name)
    with pytest.raises(LifecycleError, match="new"):
        async with pool.acquire():
            pass
    await pool.open()
    assert pool.state is PoolState.OPEN
    with pytest.raises(LifecycleError, match="already open"):
        await pool.open()
    assert await select_one(pool) == 1
    await pool.close()
    assert pool.state is PoolState.CLOSED
    with pytest.raises(LifecycleError, match="closed"):
        async with pool.acquire():
            pass
    with pytest.raises(LifecycleError, match="cannot be reopened"):
        await pool.open()
    await pool.close()  # idempotent


async def test_close_before_open_just_closes() -> None:
    """Closing a never-opened pool marks it closed without touching any server."""
    pool = Pool("postgresql://nobody@127.0.0.1:1/nowhere", SMALL)
    await pool.close()
    assert pool.state is PoolState.CLOSED


async def test_unreachable_server_fails_open_and_allows_retry() -> None:
    """open() on a refused address raises DatabaseUnavailableError and leaves the pool new."""
    pool = Pool("postgresql://nobody@127.0.0.1:1/nowhere", small(acquire_timeout_s=5))
    with pytest.raises(DatabaseUnavailableError, match="could not open"):
        await pool.open()
    assert pool.state is PoolState.NEW
    with pytest.raises(DatabaseUnavailableError):
        await pool.open()


async def test_server_settings_reach_every_connection(db_dsn: str, app_name: str) -> None:
    """application_name and statement_timeout are set, and survive the default RESET ALL."""
    settings = small(max_size=1, statement_timeout_ms=1234)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        for _ in range(2):  # the second borrow comes after a reset
            async with pool.acquire() as conn:
                assert await conn.fetchval("SHOW application_name") == app_name
                assert await conn.fetchval("SHOW statement_timeout") == "1234ms"


# --- P1, P2: dead connections ----------------------------------------------------------------


@pytest.mark.parametrize("fast_reset", [False, True], ids=["default_reset", "fast_reset"])
async def test_killed_idle_connections_are_replaced(
    db_dsn: str, admin: asyncpg.Connection, app_name: str, fast_reset: bool
) -> None:
    """P1: after pg_terminate_backend on idle connections, at most one acquire fails (503).

    A failure expires the siblings, and a reconnect racing that expiry can leave one
    surplus connection; asyncpg's idle timer (real time, so kept short here) reaps it.
    """
    settings = small(max_size=4, min_size=2, max_inactive_s=0.3, fast_reset=fast_reset)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        killed = {
            r["pid"]
            for r in await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app_name
            )
        }
        assert len(killed) == 2
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            app_name,
        )
        failures = 0
        for _ in range(2):
            try:
                async with pool.acquire() as conn:
                    pid = await conn.fetchval("SELECT pg_backend_pid()")
                break
            except DatabaseUnavailableError:
                failures += 1
        else:
            pytest.fail("the retry after a killed connection failed too")
        assert failures <= 1
        assert pool.get_stats()["connection_failures"] == failures
        assert pid not in killed
        await eventually(lambda: pool.get_stats()["pool_size"] == 2, "pool size back to min")
        assert_all_returned(pool)

        async def two_idle_backends() -> bool:  # an aborted socket's backend exits later
            return await backend_states(admin, app_name) == ["idle", "idle"]

        await eventually(two_idle_backends, "the server holds exactly min_size idle backends")


async def test_backend_killed_mid_query_fails_once(
    db_dsn: str, admin: asyncpg.Connection, app_name: str
) -> None:
    """P2: the borrower whose backend dies gets DatabaseUnavailableError; no slot is lost."""
    async with Pool(db_dsn, small(max_size=2), application_name=app_name) as pool:

        async def sleeper() -> None:
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_sleep(60)")

        task = asyncio.create_task(sleeper(), name="p2-sleeper")

        async def sleeping_pid() -> bool:
            return bool(
                await admin.fetchval(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1 AND query LIKE 'SELECT pg_sleep%'",
                    app_name,
                )
            )

        await eventually(sleeping_pid, "the sleeping backend was terminated")
        with pytest.raises(DatabaseUnavailableError):
            await asyncio.wait_for(task, 10)
        assert_all_returned(pool)
        assert [await select_one(pool) for _ in range(3)] == [1, 1, 1]
        assert "idle in transaction" not in await backend_states(admin, app_name)


async def test_command_timeout_becomes_database_unavailable(db_dsn: str, app_name: str) -> None:
    """A call cut by command_timeout raises DatabaseUnavailableError; the pool keeps serving."""
    async with Pool(db_dsn, small(command_timeout_s=0.2), application_name=app_name) as pool:
        with pytest.raises(DatabaseUnavailableError, match="in time"):
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_sleep(30)")
        assert await select_one(pool) == 1
        assert_all_returned(pool)


async def test_other_database_errors_pass_through(db_dsn: str, app_name: str) -> None:
    """SQL errors and statement_timeout cancels are not remapped, and the connection survives."""
    settings = small(max_size=1, statement_timeout_ms=50)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        with pytest.raises(asyncpg.UndefinedTableError):
            async with pool.acquire() as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                await conn.execute("SELECT * FROM no_such_table")
        with pytest.raises(asyncpg.QueryCanceledError):
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_sleep(5)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
        assert pool.get_stats()["acquire_errors"] == 0


# --- P4: clean hand-over -----------------------------------------------------------------


@pytest.mark.parametrize("fast_reset", [False, True], ids=["default_reset", "fast_reset"])
async def test_open_or_aborted_transaction_never_reaches_next_borrower(
    db_dsn: str, app_name: str, fast_reset: bool
) -> None:
    """P4: a transaction left open or aborted is rolled back before the same connection is lent."""
    settings = small(max_size=1, fast_reset=fast_reset)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE p4 (id int)")
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO p4 VALUES (1)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM p4") == 0
            await conn.execute("BEGIN")
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.execute("SELECT * FROM no_such_table")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT 1") == 1


@pytest.mark.parametrize("fast_reset", [False, True], ids=["default_reset", "fast_reset"])
async def test_session_set_is_reset_only_by_the_default_reset(
    db_dsn: str, app_name: str, fast_reset: bool
) -> None:
    """P4: SET LOCAL never leaks; a session SET is reset by default and survives fast_reset.

    The second half pins the documented trade-off of fast_reset (handlers never SET on a
    pooled connection); if asyncpg or the pool changes it, this test says so.
    """
    settings = small(max_size=1, fast_reset=fast_reset)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        async with pool.acquire() as conn:
            default = await conn.fetchval("SHOW work_mem")
            async with conn.transaction():
                await conn.execute("SET LOCAL work_mem = '1111kB'")
                await conn.execute("SELECT set_config('app.user_id', '7', true)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") == default
            assert await conn.fetchval("SELECT current_setting('app.user_id', true)") in ("", None)
            await conn.execute("SET work_mem = '2222kB'")
        async with pool.acquire() as conn:
            expected = "2222kB" if fast_reset else default
            assert await conn.fetchval("SHOW work_mem") == expected
            assert await conn.fetchval("SHOW application_name") == app_name


@pytest.mark.parametrize("fast_reset", [False, True], ids=["default_reset", "fast_reset"])
async def test_broken_connection_is_discarded_not_reused(
    db_dsn: str, app_name: str, fast_reset: bool
) -> None:
    """P4: a connection whose backend died under its borrower is never lent again."""
    settings = small(max_size=1, fast_reset=fast_reset)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        with pytest.raises(DatabaseUnavailableError):
            async with pool.acquire() as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
        stats = pool.get_stats()
        assert (stats["connection_failures"], stats["acquires"]) == (1, 2)
        assert_all_returned(pool)


# --- P5, P6: cancellation ----------------------------------------------------------------


async def test_cancelled_waiters_lose_no_slot(db_dsn: str, app_name: str) -> None:
    """P5: cancelling queued waiters, one already handed a slot, leaves every slot usable."""
    async with Pool(db_dsn, small(max_size=2), application_name=app_name) as pool:
        first, second = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
        await first.enter_async_context(pool.acquire())
        await second.enter_async_context(pool.acquire())
        waiters = [asyncio.create_task(select_one(pool), name=f"p5-{i}") for i in range(5)]
        await eventually(lambda: pool.get_stats()["pool_waiting"] == 5, "5 waiters queued")
        # Releasing hands the slot to the oldest waiter; cancelling it before it runs must
        # give that slot back (psycopg test_cancelled_waiter_assigned_conn_is_reclaimed).
        await first.aclose()
        for task in waiters:
            task.cancel()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        stats = pool.get_stats()
        assert (stats["pool_waiting"], stats["pool_available"], stats["pool_busy"]) == (0, 1, 1)
        await second.aclose()
        assert_all_returned(pool)
        assert await asyncio.gather(select_one(pool), select_one(pool)) == [1, 1]


@pytest.mark.parametrize("fast_reset", [False, True], ids=["default_reset", "fast_reset"])
async def test_release_is_given_a_deadline_only_while_a_cancellation_is_outstanding(
    db_dsn: str, app_name: str, fast_reset: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain release relies on asyncpg's ``command_timeout`` (no loop timer per request);
    a release that must first wait for a cancelled query's cancellation gets the deadline,
    and the connection comes back usable either way."""
    budgets: list[tuple[bool, float | None]] = []
    decide = Pool._release_budget

    def recorded(pool: Pool, protocol: Any) -> float | None:
        budget = decide(pool, protocol)
        budgets.append((protocol._is_cancelling(), budget))
        return budget

    monkeypatch.setattr(Pool, "_release_budget", recorded)
    async with Pool(
        db_dsn, small(max_size=1, fast_reset=fast_reset), application_name=app_name
    ) as pool:
        assert await select_one(pool) == 1

        async def stuck() -> None:
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_sleep(30)")

        task = asyncio.create_task(stuck())
        await eventually(lambda: pool.get_stats()["pool_busy"] == 1, "the query is running")
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await select_one(pool) == 1
        assert_all_returned(pool)
    assert budgets[0] == (False, None)
    assert budgets[1] == (True, SMALL.release_timeout_s)
    assert budgets[2] == (False, None)


@pytest.mark.parametrize("park", ["in_query", "between_statements"])
@pytest.mark.parametrize("fast_reset", [False, True], ids=["default_reset", "fast_reset"])
async def test_cancel_storm_leaves_no_leak_and_no_lost_write(
    db_dsn: str, admin: asyncpg.Connection, app_name: str, fast_reset: bool, park: str
) -> None:
    """P6: cancel 40 of 60 workers (every slot held mid-transaction): nothing leaks or is lost."""
    settings = small(max_size=4, fast_reset=fast_reset)
    victims = set(random.Random(60).sample(range(60), 40))
    committed: list[int] = []
    parked = 0
    never = asyncio.Event()
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE storm (worker int PRIMARY KEY)")

        async def worker(i: int) -> None:
            nonlocal parked
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute("INSERT INTO storm VALUES ($1)", i)
                    if i in victims:
                        parked += 1
                        if park == "in_query":
                            await conn.execute("SELECT pg_sleep(60)")
                        else:
                            await never.wait()
                committed.append(i)

        tasks = [asyncio.create_task(worker(i), name=f"p6-{i}") for i in range(60)]
        # Victims never finish, so every slot ends up held by a parked victim mid-transaction;
        # the other victims wait in acquire.
        await eventually(lambda: parked == settings.max_size, "every slot held by a victim")
        for i in victims:
            tasks[i].cancel()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        cancelled = {i for i, r in enumerate(results) if isinstance(r, asyncio.CancelledError)}
        assert cancelled == victims
        assert [r for r in results if not isinstance(r, asyncio.CancelledError)] == [None] * 20
        assert sorted(committed) == sorted(set(range(60)) - victims)
        assert_all_returned(pool)
        await eventually(
            lambda: pool.get_stats()["pool_idle"] == pool.get_stats()["pool_size"],
            "asyncpg has every connection back",
        )
        states = await backend_states(admin, app_name)
        assert len(states) <= settings.max_size
        assert "idle in transaction" not in states
        assert "idle in transaction (aborted)" not in states
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT worker FROM storm ORDER BY worker")
        assert [r["worker"] for r in rows] == sorted(committed)


# --- P7: exhaustion ------------------------------------------------------------------------


@pytest.mark.parametrize("max_waiting", [0, 2])
async def test_max_waiting_rejects_the_excess_at_once(
    db_dsn: str, app_name: str, max_waiting: int
) -> None:
    """P7: with every slot held, callers beyond max_waiting get OverloadedError without waiting."""
    settings = small(max_size=2, max_waiting=max_waiting)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        held = contextlib.AsyncExitStack()
        for _ in range(2):
            await held.enter_async_context(pool.acquire())
        tasks = [asyncio.create_task(select_one(pool), name=f"p7-{i}") for i in range(5)]
        await eventually(lambda: sum(t.done() for t in tasks) == 5 - max_waiting, "rejections")
        # The slots are still held, so whatever finished was refused rather than served.
        assert pool.get_stats()["pool_waiting"] == max_waiting
        for task in (t for t in tasks if t.done()):
            error = task.exception()
            assert isinstance(error, OverloadedError)
            assert f"max_waiting={max_waiting}" in str(error)
            assert error.retry_after_s > 0
        await held.aclose()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results.count(1) == max_waiting
        stats = pool.get_stats()
        assert stats["rejections"] == 5 - max_waiting
        assert (stats["acquire_timeouts"], stats["acquires"]) == (0, 2 + max_waiting)
        assert_all_returned(pool)


async def test_acquire_times_out_with_overloaded_error(db_dsn: str, app_name: str) -> None:
    """P7: without max_waiting, waiters give up after acquire_timeout_s and no slot is lost."""
    settings = small(max_size=2, acquire_timeout_s=0.05)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        held = contextlib.AsyncExitStack()
        for _ in range(2):
            await held.enter_async_context(pool.acquire())
        results = await asyncio.gather(
            *(select_one(pool) for _ in range(3)), return_exceptions=True
        )
        for error in results:
            assert isinstance(error, OverloadedError)
            assert "timed out after 0.05 s waiting for a database connection" in str(error)
        stats = pool.get_stats()
        assert (stats["acquire_timeouts"], stats["rejections"], stats["pool_waiting"]) == (3, 0, 0)
        await held.aclose()
        assert_all_returned(pool)
        assert await asyncio.gather(select_one(pool), select_one(pool)) == [1, 1]


# --- accounting and health -----------------------------------------------------------------


async def test_a_connect_that_hangs_is_an_acquire_timeout() -> None:
    """A free slot and no connection open yet: the acquire arms no deadline of its own, and
    asyncpg's connect timeout (the same ``acquire_timeout_s``) ends the hang, answered as
    an expired acquire (OverloadedError, counted in acquire_timeouts)."""
    clients: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.append(writer)
        await reader.read()  # returns when the client gives up

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = small(min_size=0, acquire_timeout_s=0.3)
    try:
        async with Pool(f"postgresql://sixty@127.0.0.1:{port}/sixty", settings) as pool:
            with pytest.raises(OverloadedError, match=r"timed out after 0\.3 s"):
                async with pool.acquire():
                    pass
            stats = pool.get_stats()
        assert (stats["acquire_timeouts"], stats["acquire_errors"]) == (1, 0)
    finally:
        for writer in clients:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_connection_seconds_are_integrated_exactly(
    db_dsn: str, app_name: str, fake_clock: FakeClock
) -> None:
    """Busy and open connection-seconds follow acquire/release events on the injected clock."""
    settings = small(max_size=3, min_size=1)
    async with Pool(db_dsn, settings, application_name=app_name, clock=fake_clock) as pool:
        assert pool.get_stats()["pool_efficiency"] == 0.0
        a, b = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
        await a.enter_async_context(pool.acquire())  # the one warm connection: size 1
        fake_clock.tick(2)
        await b.enter_async_context(pool.acquire())  # connects a second: size 2
        fake_clock.tick(3)
        await a.aclose()  # A held 5 s; open so far 1*2 + 2*3 = 8
        fake_clock.tick(5)
        stats = pool.get_stats()  # B held 8 s so far; open 8 + 2*5 = 18
        assert stats["busy_connection_s"] == pytest.approx(13.0)
        assert stats["open_connection_s"] == pytest.approx(18.0)
        assert stats["pool_efficiency"] == pytest.approx(13 / 18)
        assert stats["utilization_pct"] == pytest.approx(100 / 3)
        await b.aclose()
        fake_clock.tick(1)
        stats = pool.get_stats()
        assert stats["busy_connection_s"] == pytest.approx(13.0)
        assert stats["open_connection_s"] == pytest.approx(20.0)
        assert stats["acquires"] == 2
        assert stats["acquire_wait_ms_buckets"]["1"] == 2


async def test_open_seconds_stop_counting_a_connection_closed_between_leases(
    db_dsn: str, app_name: str, fake_clock: FakeClock, admin: asyncpg.Connection
) -> None:
    """A connection the server kills while idle stops adding open seconds when it closes,
    though no lease happened since: the count follows closes, not the lease events."""
    async with Pool(db_dsn, small(), application_name=app_name, clock=fake_clock) as pool:
        async with pool.acquire(), pool.acquire():  # size 2, both back before time passes
            pass
        fake_clock.tick(1)  # two idle connections: 2 s
        victim = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 LIMIT 1", app_name
        )
        await admin.execute("SELECT pg_terminate_backend($1)", victim)
        await eventually(lambda: pool.get_stats()["pool_size"] == 1, "the killed one closed")
        await asyncio.sleep(0)  # asyncpg runs termination listeners with call_soon
        fake_clock.tick(10)  # one connection: 10 s more
        assert pool.get_stats()["open_connection_s"] == pytest.approx(12.0)


async def test_wait_histogram_uses_the_injected_clock(
    db_dsn: str, app_name: str, fake_clock: FakeClock
) -> None:
    """A 30 ms wait lands in the le=50 bucket; buckets are cumulative up to +Inf."""
    settings = small(max_size=1)
    async with Pool(db_dsn, settings, application_name=app_name, clock=fake_clock) as pool:
        held = contextlib.AsyncExitStack()
        await held.enter_async_context(pool.acquire())
        waiter = asyncio.create_task(select_one(pool), name="histogram-waiter")
        await eventually(lambda: pool.get_stats()["pool_waiting"] == 1, "one waiter")
        fake_clock.tick(0.030)
        await held.aclose()
        assert await waiter == 1
        stats = pool.get_stats()
    buckets = stats["acquire_wait_ms_buckets"]
    assert list(buckets) == [
        "1",
        "5",
        "10",
        "25",
        "50",
        "100",
        "250",
        "500",
        "1000",
        "5000",
        "+Inf",
    ]
    assert (buckets["1"], buckets["25"], buckets["50"], buckets["+Inf"]) == (1, 1, 2, 2)
    assert stats["acquire_wait_ms_max"] == pytest.approx(30.0)
    assert stats["acquire_wait_ms_total"] == pytest.approx(30.0)


async def test_counts_match_calls_under_concurrency(db_dsn: str, app_name: str) -> None:
    """30 concurrent borrows on 3 slots: 30 acquires, busy <= open, efficiency = busy/open."""
    async with Pool(db_dsn, small(max_size=3), application_name=app_name) as pool:
        assert await asyncio.gather(*(select_one(pool) for _ in range(30))) == [1] * 30
        stats = pool.get_stats()
    assert stats["acquires"] == 30
    assert stats["acquire_wait_ms_buckets"]["+Inf"] == 30
    assert (stats["rejections"], stats["acquire_timeouts"], stats["acquire_errors"]) == (0, 0, 0)
    assert 0 < stats["busy_connection_s"] <= stats["open_connection_s"]
    assert stats["pool_efficiency"] == pytest.approx(
        stats["busy_connection_s"] / stats["open_connection_s"]
    )


async def test_health_follows_the_original_thresholds(db_dsn: str, app_name: str) -> None:
    """healthy with 2 idle, busy below 2 idle or at 5 waiters, overloaded above 5 waiters."""
    settings = small(max_size=4, min_size=2)
    async with Pool(db_dsn, settings, application_name=app_name) as pool:
        assert pool.get_stats()["health"] == "healthy"
        assert pool.health_snapshot() == {
            "total_connections": 2,
            "idle_connections": 2,
            "waiting_requests": 0,
            "max_pool_size": 4,
            "min_pool_size": 2,
            "utilization": "50%",
        }
        held = contextlib.AsyncExitStack()
        await held.enter_async_context(pool.acquire())
        assert pool.get_stats()["health"] == "busy"  # 1 idle
        for _ in range(3):
            await held.enter_async_context(pool.acquire())
        waiters = [asyncio.create_task(select_one(pool), name=f"health-{i}") for i in range(5)]
        await eventually(lambda: pool.get_stats()["pool_waiting"] == 5, "5 waiters")
        assert pool.get_stats()["health"] == "busy"
        waiters.append(asyncio.create_task(select_one(pool), name="health-5"))
        await eventually(lambda: pool.get_stats()["pool_waiting"] == 6, "6 waiters")
        stats, snapshot = pool.get_stats(), pool.health_snapshot()
        assert stats["health"] == "overloaded"
        assert stats["utilization_pct"] == 100.0
        assert (snapshot["waiting_requests"], snapshot["utilization"]) == (6, "100%")
        await held.aclose()
        assert await asyncio.gather(*waiters) == [1] * 6
        assert pool.get_stats()["health"] == "healthy"


# --- P16: shutdown -------------------------------------------------------------------------


async def test_close_drains_borrowers_fails_waiters_and_leaves_no_backend(
    db_dsn: str, admin: asyncpg.Connection, app_name: str
) -> None:
    """P16: close() refuses new work, fails waiters, lets the borrower finish, then 0 backends."""
    pool = Pool(db_dsn, small(max_size=1), application_name=app_name)
    await pool.open()
    proceed = asyncio.Event()

    async def borrower() -> int:
        async with pool.acquire() as conn:
            await proceed.wait()
            return int(await conn.fetchval("SELECT 41 + 1"))

    borrowing = asyncio.create_task(borrower(), name="p16-borrower")
    await eventually(lambda: pool.get_stats()["pool_busy"] == 1, "the borrower holds the slot")
    waiter = asyncio.create_task(select_one(pool), name="p16-waiter")
    await eventually(lambda: pool.get_stats()["pool_waiting"] == 1, "one waiter")
    closing = asyncio.create_task(pool.close(timeout_s=30), name="p16-close")
    with pytest.raises(LifecycleError, match="closed while waiting"):
        await asyncio.wait_for(waiter, 10)
    with pytest.raises(LifecycleError):
        await select_one(pool)
    assert not closing.done()  # still draining: the borrower has not returned its connection
    proceed.set()
    assert await asyncio.wait_for(borrowing, 10) == 42
    await asyncio.wait_for(closing, 10)
    await eventually(lambda: _no_backends(admin, app_name), "no backend left for the application")


async def test_close_timeout_terminates_borrowed_connections(
    db_dsn: str, admin: asyncpg.Connection, app_name: str
) -> None:
    """P16: a borrower that outlives close(timeout_s) is cut off with DatabaseUnavailableError."""
    pool = Pool(db_dsn, small(max_size=2), application_name=app_name)
    await pool.open()
    proceed = asyncio.Event()

    async def borrower() -> None:
        async with pool.acquire() as conn:
            await proceed.wait()
            await conn.fetchval("SELECT 1")

    borrowing = asyncio.create_task(borrower(), name="p16-late-borrower")
    await eventually(lambda: pool.get_stats()["pool_busy"] == 1, "the borrower holds a slot")
    await asyncio.wait_for(pool.close(timeout_s=0.1), 10)
    proceed.set()
    with pytest.raises(DatabaseUnavailableError):
        await asyncio.wait_for(borrowing, 10)
    assert pool.get_stats()["pool_size"] == 0
    await eventually(lambda: _no_backends(admin, app_name), "no backend left for the application")


async def _no_backends(admin: asyncpg.Connection, app: str) -> bool:
    return await backend_states(admin, app) == []
