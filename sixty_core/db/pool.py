"""The database connection pool: asyncpg underneath, bounded waiters and exact accounting on top.

:class:`Pool` wraps :func:`asyncpg.create_pool` and adds what asyncpg lacks:

- an explicit lifecycle (``new`` -> ``open`` -> ``closed``) with :class:`LifecycleError` on
  every wrong transition, and no I/O in the constructor;
- admission control: at most ``max_size`` borrowers, then a FIFO of waiters bounded by
  ``max_waiting``. Beyond that bound :class:`OverloadedError` is raised at once (asyncpg has no
  ``max_waiting``). The whole wait (slot plus connect) is bounded by ``acquire_timeout_s``;
- error mapping: connection-level failures at acquire or inside the ``async with`` body become
  :class:`DatabaseUnavailableError`. Other database errors (constraint violations,
  ``QueryCanceledError`` from ``statement_timeout``) pass through for the repository to map;
- exact accounting at acquire and release (see :meth:`Pool.get_stats`).

Resetting a connection on release (asyncpg 0.32, ``PoolConnectionHolder.release``)
--------------------------------------------------------------------------------------
asyncpg resets a released connection in two steps. **Step one** always runs:
``Connection._reset()`` drops client-side listener callbacks. It sends ``ROLLBACK`` only if
the server's last ReadyForQuery reported an open or aborted transaction (or an asyncpg
``Transaction`` is still active), so there is no round trip otherwise. **Step two** defaults
to ``Connection.reset()``, which sends ``get_reset_query()`` on every release::

    SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;

A custom ``reset=`` callable replaces only step two. If either step fails or times out, the
connection is terminated and never reused.

``fast_reset=True`` passes a no-op ``reset=``, so only step one runs. The next borrower is
then guaranteed no open or aborted transaction, so transaction-scoped state (``SET LOCAL``,
``set_config(..., true)``, non-holdable cursors) never leaks. Session-level ``SET``,
``LISTEN``, advisory locks and ``WITH HOLD`` cursors **do** survive to the next borrower. This
is safe only because our handlers never create them on pooled connections. DESIGN §8 measured
a primary-key lookup at ~9-10k req/s with the default reset and ~13-16k req/s with a no-op.
Neither mode drops temporary tables (``RESET ALL`` does not). ``application_name`` and
``statement_timeout`` are sent in the startup packet, so they are session defaults and
survive ``RESET ALL``.

Deadlines
---------
``command_timeout_s`` bounds every call on the client side (``LEGACY_POOL``: 15 s, the
original's ``query_timeout``). Connecting and waiting for a slot are bounded by
``acquire_timeout_s``. An acquire that holds a slot while asyncpg has an idle connection
ready cannot wait for a slot, so it arms no timer of its own: taking from asyncpg's queue
does not suspend then, and a connect it may still need (a holder whose connection closed,
or one the pool has not opened yet) is bounded by the same ``acquire_timeout_s``, passed to
asyncpg as its connect timeout; that timeout is answered as an expired acquire would be.

Release (the reset round trip) is bounded by ``command_timeout_s``, or by
``acquire_timeout_s`` when that is ``None``; that is the bound asyncpg itself gives a
release after ``pool.acquire(timeout=...)``. With ``command_timeout_s`` set, asyncpg already
bounds each statement of the release by it, so the explicit deadline is passed only while a
query cancellation is outstanding (:meth:`Pool._release_budget`).

Counting
--------
Every lease, the unpooled fallback's included, counts the statements sent on its connection
while lent (asyncpg's per-connection counter: :mod:`sixty_core.db.recorder`), for the
request that borrowed it and in ``statements_sent``.

Open connection-seconds integrate a count of the pooled connections kept at the two events
that change it: asyncpg's ``init`` hook (a connection opened) adds one and registers the
connection's termination listener, which takes it away again on any close. asyncpg's
``get_size()`` walks every slot (15 in the optimized profile); sampling it at each acquire
and release cost 12 µs of CPU per lease in paired rounds with all 15 connections open
(16 concurrent borrowers running ``SELECT 1``; interquartile range of the paired
differences 4-26 µs).

The unpooled fallback (legacy)
------------------------------
With ``unpooled_fallback`` (the original's ``getDbClient``, ORIGINAL_SYSTEM.md §2.2), an
acquire that fails (no slot within ``acquire_timeout_s``, or a failed connect) opens one
connection outside the pool for that borrower and closes it on release; the pool's size
bound does not apply to it. ``unpooled_connections`` counts them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import enum
import logging
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg

from sixty_core.db.recorder import count_statements
from sixty_core.errors import DatabaseUnavailableError, LifecycleError, OverloadedError
from sixty_core.types import Clock

logger = logging.getLogger(__name__)

#: Waiters allowed in the optimized profile before acquire fails fast with OverloadedError.
DEFAULT_MAX_WAITING = 32
#: ``application_name`` of pooled connections; ``pg_stat_activity`` is filtered on it.
DEFAULT_APPLICATION_NAME = "sixty"
#: How long :meth:`Pool.close` waits for borrowed connections before terminating them.
DEFAULT_CLOSE_TIMEOUT_S = 10.0
#: ``retry_after_s`` carried by OverloadedError and DatabaseUnavailableError from the pool.
DEFAULT_RETRY_AFTER_S = 1.0
#: Upper bounds (ms) of the acquire-wait histogram; a final ``+Inf`` bucket follows.
ACQUIRE_WAIT_BUCKETS_MS: tuple[float, ...] = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)
#: Health thresholds of the original ``getPoolStats()``: waiting > 5 is overloaded ...
OVERLOADED_ABOVE_WAITING = 5
#: ... else fewer than 2 idle connections is busy (so a cold pool of min 2 reports busy).
BUSY_BELOW_IDLE = 2

# Failures that mean "no usable connection": the socket, the server or the session is gone.
_CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionRefusedError and TimeoutError (connect or command_timeout)
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.AdminShutdownError,  # pg_terminate_backend on a busy backend
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # The protocol is confused about its own state: seen on P1, when the FATAL that
    # pg_terminate_backend sends to an idle connection arrives before the EOF.
    asyncpg.InternalClientError,
)


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    """How a :class:`Pool` is sized and bounded. Invalid values raise ``ValueError``.

    ``max_inactive_s`` is how long an idle connection above ``min_size`` lives.
    ``statement_timeout_ms`` and ``idle_in_transaction_timeout_ms`` are sent as server
    settings (0 = off). ``command_timeout_s`` is asyncpg's client-side bound (``None`` =
    unbounded). ``max_waiting`` is the number of callers that may queue for a slot (``None`` =
    unbounded, the legacy behaviour; ``0`` = never queue). ``fast_reset`` replaces asyncpg's
    reset query with a no-op (see the module docstring). ``max_queries`` retires a connection
    after that many queries (node-postgres ``maxUses``). ``unpooled_fallback`` lends a
    connection from outside the pool when an acquire fails (module docstring).
    """

    max_size: int
    min_size: int
    max_inactive_s: float
    acquire_timeout_s: float
    statement_timeout_ms: int
    command_timeout_s: float | None
    max_waiting: int | None
    fast_reset: bool
    idle_in_transaction_timeout_ms: int = 0
    max_queries: int = 50_000
    unpooled_fallback: bool = False

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {self.max_size}")
        if not 0 <= self.min_size <= self.max_size:
            raise ValueError(
                f"min_size must be in [0, max_size={self.max_size}], got {self.min_size}"
            )
        if self.max_inactive_s < 0:
            raise ValueError(f"max_inactive_s must be >= 0, got {self.max_inactive_s}")
        if self.acquire_timeout_s <= 0:
            raise ValueError(f"acquire_timeout_s must be > 0, got {self.acquire_timeout_s}")
        if self.statement_timeout_ms < 0:
            raise ValueError(f"statement_timeout_ms must be >= 0, got {self.statement_timeout_ms}")
        if self.command_timeout_s is not None and self.command_timeout_s <= 0:
            raise ValueError(f"command_timeout_s must be > 0 or None, got {self.command_timeout_s}")
        if self.max_waiting is not None and self.max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0 or None, got {self.max_waiting}")
        if self.idle_in_transaction_timeout_ms < 0:
            raise ValueError(
                "idle_in_transaction_timeout_ms must be >= 0, "
                f"got {self.idle_in_transaction_timeout_ms}"
            )
        if self.max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {self.max_queries}")

    @property
    def release_timeout_s(self) -> float:
        """The bound on returning a connection (its reset round trip)."""
        return self.command_timeout_s or self.acquire_timeout_s


#: The original's node-postgres pool mapped to asyncpg (ORIGINAL_SYSTEM.md §2.2): max 20,
#: min 2, idle 30 s, connectionTimeoutMillis 10 s, query_timeout 15 s, statement and
#: idle-in-transaction timeouts 15 s, maxUses 7500, and getDbClient's unpooled fallback.
#: Its flaws stay: waiters are unbounded, and asyncpg's default reset runs on every release.
LEGACY_POOL = PoolSettings(
    max_size=20,
    min_size=2,
    max_inactive_s=30,
    acquire_timeout_s=10,
    statement_timeout_ms=15000,
    command_timeout_s=15.0,
    max_waiting=None,
    fast_reset=False,
    idle_in_transaction_timeout_ms=15000,
    max_queries=7500,
    unpooled_fallback=True,
)

#: The tuned pool (ORIGINAL_SYSTEM.md §3.5 sizes and timeouts): smaller, bounded waiters
#: that fail fast, rollback-only reset, and no connection outside the pool.
OPTIMIZED_POOL = PoolSettings(
    max_size=15,
    min_size=3,
    max_inactive_s=20,
    acquire_timeout_s=12,
    statement_timeout_ms=12000,
    command_timeout_s=12.0,
    max_waiting=DEFAULT_MAX_WAITING,
    fast_reset=True,
    idle_in_transaction_timeout_ms=10000,
)


class PoolState(enum.Enum):
    """Where a :class:`Pool` is in its life: it only moves forward."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class _SlotGate:
    """At most ``size`` holders and a FIFO of waiters; a freed slot goes to the oldest waiter.

    The slot is handed over by resolving the waiter's future, not by bumping a counter and
    waking it, so a newcomer can never overtake the queue. A waiter cancelled after it was
    handed a slot gives the slot back, so cancellation loses no slot (P5; psycopg
    ``test_cancelled_waiter_assigned_conn_is_reclaimed``).
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_take(self) -> bool:
        # Slots are free only while nobody waits (give() serves waiters first), so taking
        # one here never jumps the queue.
        if self._free:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot; on cancellation hold none (a slot handed over is given back)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def fail_waiters(self, message: str) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(LifecycleError(message))


async def _skip_reset_query(conn: asyncpg.Connection) -> None:
    """The ``fast_reset`` reset: only asyncpg's own rollback of an open transaction runs."""


def _is_dead(conn: asyncpg.Connection | None) -> bool:
    if conn is None:
        return True
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        # The proxy was detached while borrowed: asyncpg only does that when the
        # connection closed underneath us.
        return True


def _connection_failure(exc: BaseException, conn: asyncpg.Connection | None) -> str | None:
    """A client-safe description if ``exc`` means the connection is unusable, else None."""
    if isinstance(exc, TimeoutError):
        return "the database did not answer in time"
    if isinstance(exc, _CONNECTION_FAILURES):
        return f"the database connection failed ({type(exc).__name__})"
    if isinstance(exc, asyncpg.InterfaceError) and _is_dead(conn):
        return f"the database connection is closed ({type(exc).__name__})"
    return None


class _Lease:
    """One borrowing of a connection, used as ``async with pool.acquire() as conn``."""

    __slots__ = ("_conn", "_pool", "_protocol", "_sent_before", "_since", "_unpooled")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._protocol: Any = None
        self._sent_before = 0
        self._since = 0.0
        self._unpooled = False

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            self._conn, self._since = await self._pool._checkout()
        except (OverloadedError, DatabaseUnavailableError):
            if not self._pool.settings.unpooled_fallback or self._pool._is_closed():
                raise
            # getDbClient's fallback (ORIGINAL_SYSTEM.md §2.2): one connection of its own.
            self._conn = await self._pool._connect_unpooled()
            self._unpooled = True
        # asyncpg's protocol object of this connection counts every message it sends that
        # runs SQL (recorder module docstring); asyncpg's own pool reads the same counter
        # for max_queries. What it counts while lent is this lease's.
        self._protocol = self._conn._protocol
        self._sent_before = self._protocol.queries_count
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        # Decide before release: release detaches the proxy.
        failure = _connection_failure(exc, conn) if exc is not None else None
        try:
            if self._unpooled:
                await self._pool._close_unpooled(conn)
            else:
                try:
                    if failure is not None:
                        suspect = not isinstance(exc, TimeoutError)
                        await self._pool._discard(conn, siblings_suspect=suspect)
                finally:
                    await self._pool._checkin(conn, self._since, self._protocol)
        finally:
            # After the release: the reset it sends (legacy) is this lease's too. Counted
            # now, in the borrower's context, so a tally is complete when the block exits.
            self._pool._count_sent(self._protocol.queries_count - self._sent_before)
        if failure is not None:
            raise DatabaseUnavailableError(failure, retry_after_s=DEFAULT_RETRY_AFTER_S) from exc


class Pool:
    """An asyncpg pool with a lifecycle, bounded waiters, error mapping and exact accounting.

    Use ``async with Pool(dsn, settings) as pool`` or call :meth:`open` and :meth:`close`.
    Borrow with ``async with pool.acquire() as conn``. The connection goes back to the pool
    when the block exits, whatever the exit (exception, cancellation). Returning it is
    shielded from cancellation (asyncpg #97), so the server never keeps an
    ``idle in transaction`` backend for a cancelled borrower (P6).

    ``clock`` is used only for accounting (wait times, busy and open connection-seconds).
    Timeouts run on the event loop's clock.
    """

    def __init__(
        self,
        dsn: str,
        settings: PoolSettings,
        *,
        application_name: str = DEFAULT_APPLICATION_NAME,
        clock: Clock = time.monotonic,
    ) -> None:
        self._dsn = dsn
        self._settings = settings
        self._application_name = application_name
        self._clock = clock
        self._state = PoolState.NEW
        self._opening = False
        self._pool: Any = None  # asyncpg.Pool once open
        self._gate = _SlotGate(settings.max_size)
        self._acquires = 0
        self._acquire_timeouts = 0
        self._acquire_errors = 0
        self._connection_failures = 0
        self._rejections = 0
        self._wait_ms_total = 0.0
        self._wait_ms_max = 0.0
        self._wait_counts = [0] * (len(ACQUIRE_WAIT_BUCKETS_MS) + 1)
        self._busy = 0
        self._held_since_sum = 0.0  # sum of checkout times of borrowed connections
        self._busy_s = 0.0  # held seconds of returned connections
        self._open_s = 0.0
        # Connections open now: +1 at each connect (asyncpg's ``init`` hook), -1 at each
        # close (the connection's termination listener). Integrated into ``_open_s``
        # while ``_integrating`` (from open until close has finished).
        self._open_count = 0
        self._integrating = False
        self._last_event = 0.0
        self._statements = 0
        self._unpooled = 0
        self._unpooled_open = 0

    @property
    def state(self) -> PoolState:
        return self._state

    @property
    def settings(self) -> PoolSettings:
        return self._settings

    @property
    def application_name(self) -> str:
        return self._application_name

    def _is_closed(self) -> bool:
        # A method, not an inline check, because the state changes across awaits and
        # mypy would narrow an inline comparison to the pre-await value.
        return self._state is PoolState.CLOSED

    def __repr__(self) -> str:
        return f"<Pool {self._application_name!r} {self._state.value}>"

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect ``min_size`` connections.

        Raises :class:`LifecycleError` if the pool is opening, open or closed.
        Raises :class:`DatabaseUnavailableError` if the server cannot be reached; the pool
        then stays ``new`` and ``open()`` may be retried.
        """
        if self._state is PoolState.OPEN or self._opening:
            raise LifecycleError("pool is already open")
        if self._state is PoolState.CLOSED:
            raise LifecycleError("pool is closed and cannot be reopened")
        s = self._settings
        self._opening = True
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=s.min_size,
                max_size=s.max_size,
                max_queries=s.max_queries,
                max_inactive_connection_lifetime=s.max_inactive_s,
                command_timeout=s.command_timeout_s,
                timeout=s.acquire_timeout_s,  # bounds each connect
                server_settings=self._server_settings(),
                reset=_skip_reset_query if s.fast_reset else None,
                init=self._connected,
            )
        except (*_CONNECTION_FAILURES, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailableError(
                f"could not open the pool ({type(exc).__name__})",
                retry_after_s=DEFAULT_RETRY_AFTER_S,
            ) from exc
        finally:
            self._opening = False
        if self._is_closed():  # close() ran while we were connecting
            pool.terminate()
            raise LifecycleError("pool was closed while it was opening")
        self._pool = pool
        self._state = PoolState.OPEN
        self._last_event = self._clock()
        self._integrating = True

    async def close(self, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Close gracefully: refuse new acquires, then fail waiters with LifecycleError.

        Then wait up to ``timeout_s`` for borrowed connections to come back, and terminate
        whatever is still borrowed. Borrowers of terminated connections get
        :class:`DatabaseUnavailableError` on their next call. Idempotent. Closing a pool that
        was never opened just marks it closed.
        """
        if self._state is PoolState.CLOSED:
            return
        self._state = PoolState.CLOSED
        self._gate.fail_waiters("pool closed while waiting for a connection")
        pool = self._pool
        if pool is None:
            return
        try:
            # asyncpg's close() terminates every connection if it is cancelled.
            await asyncio.wait_for(pool.close(), timeout_s)
        except TimeoutError:
            logger.warning(
                "pool %r: %d connection(s) still borrowed after %g s; terminated",
                self._application_name,
                self._busy,
                timeout_s,
            )
        finally:
            self._advance(self._clock())
            self._integrating = False

    async def __aenter__(self) -> Pool:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _server_settings(self) -> dict[str, str]:
        s = self._settings
        return {
            "application_name": self._application_name,
            "statement_timeout": str(s.statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(s.idle_in_transaction_timeout_ms),
        }

    def _count_sent(self, statements: int) -> None:
        """``statements`` were sent on a lent connection: the pool's total and the current
        tally (:mod:`sixty_core.db.recorder`) count them."""
        self._statements += statements
        count_statements(statements)

    async def _connect_unpooled(self) -> asyncpg.Connection:
        """A connection outside the pool, set up like the pool's (the legacy fallback)."""
        s = self._settings
        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=s.acquire_timeout_s,
                command_timeout=s.command_timeout_s,
                server_settings=self._server_settings(),
            )
        except (*_CONNECTION_FAILURES, asyncpg.InterfaceError) as exc:
            self._acquire_errors += 1
            raise DatabaseUnavailableError(
                f"could not connect outside the pool either ({type(exc).__name__})",
                retry_after_s=DEFAULT_RETRY_AFTER_S,
            ) from exc
        self._unpooled += 1
        self._unpooled_open += 1
        return conn

    async def _close_unpooled(self, conn: asyncpg.Connection | None) -> None:
        self._unpooled_open -= 1
        if conn is None:
            return
        try:
            # Shielded like a pooled release: a cancelled borrower must not leave it open.
            await asyncio.shield(conn.close(timeout=self._settings.release_timeout_s))
        except Exception:
            conn.terminate()

    # --- borrowing -----------------------------------------------------------------------

    def acquire(self) -> _Lease:
        """Borrow a connection: ``async with pool.acquire() as conn``.

        Raises, on entering the block:

        - :class:`LifecycleError` if the pool is not open, or closes while we wait;
        - :class:`OverloadedError` at once if no slot is free and ``max_waiting`` callers
          already wait (a rejection), or after ``acquire_timeout_s`` without a connection;
        - :class:`DatabaseUnavailableError` if connecting fails.

        Inside the block, connection-level failures (connection lost, server shutting
        down, ``command_timeout``) become :class:`DatabaseUnavailableError` when the block
        exits, and the connection is discarded (see :meth:`_discard`). Other exceptions
        pass through unchanged and the connection is reset and reused.
        """
        return _Lease(self)

    async def _checkout(self) -> tuple[asyncpg.Connection, float]:
        if self._state is not PoolState.OPEN:
            raise LifecycleError(f"cannot acquire from a pool that is {self._state.value}")
        pool, gate, s = self._pool, self._gate, self._settings
        started = self._clock()
        has_slot = gate.try_take()
        if not has_slot and s.max_waiting is not None and gate.waiting >= s.max_waiting:
            self._rejections += 1
            raise OverloadedError(
                f"too many requests waiting for a database connection "
                f"({gate.waiting} waiting, max_waiting={s.max_waiting})",
                retry_after_s=DEFAULT_RETRY_AFTER_S,
            )
        # A deadline is armed only when something can wait: a queue for a slot, or no
        # idle connection in asyncpg's queue (module docstring, Deadlines). Otherwise no
        # timeout scope is entered at all: even a deadline-free one is three Python calls
        # on every lease.
        scope = (
            asyncio.timeout(s.acquire_timeout_s) if not has_slot or pool._queue.empty() else None
        )
        try:
            if scope is None:
                conn = await pool.acquire()
            else:
                async with scope:
                    if not has_slot:
                        await gate.take()  # holds no slot if it raises
                        has_slot = True
                    conn = await pool.acquire()
        except BaseException as exc:
            if has_slot:
                gate.give()
            # Without our deadline, a connect asyncpg timed out (its connect timeout is the
            # same acquire_timeout_s) is the same event, and is answered the same way.
            expired = isinstance(exc, TimeoutError) if scope is None else scope.expired()
            if expired:
                self._acquire_timeouts += 1
                raise OverloadedError(
                    f"timed out after {s.acquire_timeout_s:g} s waiting for a database connection",
                    retry_after_s=DEFAULT_RETRY_AFTER_S,
                ) from None
            if isinstance(exc, LifecycleError | asyncio.CancelledError):
                raise
            if self._is_closed():  # asyncpg refused: "pool is closing"
                raise LifecycleError("pool closed while waiting for a connection") from exc
            failure = _connection_failure(exc, None)
            if failure is None:
                raise
            self._acquire_errors += 1
            raise DatabaseUnavailableError(failure, retry_after_s=DEFAULT_RETRY_AFTER_S) from exc
        now = self._clock()
        self._record_wait((now - started) * 1000.0)
        self._acquires += 1
        self._busy += 1
        self._held_since_sum += now
        return conn, now

    async def _discard(self, conn: asyncpg.Connection | None, *, siblings_suspect: bool) -> None:
        """Never lend ``conn`` again; if the server dropped it, replace its siblings too.

        A reset would not catch every broken state (with ``fast_reset`` a connection whose
        protocol is confused would go back as is), so the connection is terminated. A
        connection lost to the server (admin kill, restart) means the others opened
        alongside are likely dead as well. Expiring them makes the next acquire connect
        afresh, so a caller sees one failure rather than one per dead connection (P1).
        Idle connections are replaced at their next acquire, borrowed ones at release.
        A timeout (``command_timeout``) says nothing about the siblings.

        Known noise: asyncpg closes an expired connection in a task it does not await. If
        that connection was already dead, asyncio logs "Task exception was never retrieved"
        (``BrokenPipeError``). It is harmless.
        """
        self._connection_failures += 1
        if conn is not None:
            with contextlib.suppress(asyncpg.InterfaceError):  # already detached: dead
                conn.terminate()
        if siblings_suspect and self._state is PoolState.OPEN:
            await self._pool.expire_connections()

    async def _checkin(self, conn: asyncpg.Connection | None, since: float, protocol: Any) -> None:
        try:
            if conn is not None:
                # asyncpg shields the reset from our cancellation. If we are cancelled
                # anyway, the reset finishes in the background: the next taker of this
                # slot then waits inside asyncpg (within its acquire timeout) until the
                # connection is back, so no slot is lost. The only cost is that busy time
                # stops at the cancellation.
                await self._pool.release(conn, timeout=self._release_budget(protocol))
        except Exception as exc:
            # asyncpg has already terminated the connection, so it is discarded, never
            # reused. The borrower's work is done (maybe committed), so raising here would
            # report a success as a failure.
            if self._state is PoolState.OPEN:
                logger.warning("discarded a connection whose reset failed: %r", exc)
        finally:
            now = self._clock()
            self._busy -= 1
            self._held_since_sum -= since
            self._busy_s += now - since
            self._gate.give()

    def _release_budget(self, protocol: Any) -> float | None:
        """The deadline to hand asyncpg's release: ``None`` when every wait in it is
        already bounded by ``command_timeout_s``.

        ``protocol`` is the lent connection's asyncpg protocol (read at checkout: the
        proxy may be detached by now). A release waits for three things at most: an
        outstanding query cancellation, the ``ROLLBACK``/reset statement and, past
        ``max_queries``, the close. asyncpg bounds the last two by ``command_timeout`` when
        given no deadline (``_get_timeout_impl``); only the cancellation wait is unbounded
        then. So an explicit deadline (a loop timer armed and cancelled per lease: 15-17 µs
        of CPU in paired rounds) is passed only while a cancellation is outstanding or
        when there is no ``command_timeout_s``. Nothing can start a
        cancellation between this check and the release: the borrower's block is over.
        """
        s = self._settings
        if s.command_timeout_s is None or protocol._is_cancelling():
            return s.release_timeout_s
        return None

    # --- accounting ----------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Integrate the open-connection count up to ``now``."""
        if self._integrating:
            self._open_s += self._open_count * (now - self._last_event)
        self._last_event = now

    async def _connected(self, conn: asyncpg.Connection) -> None:
        """asyncpg's ``init`` hook: a pooled connection has just opened (module docstring,
        Counting). It is counted until its termination listener runs."""
        if conn.is_closed():
            # Lost between the handshake and now: asyncpg's connection-lost handler ran
            # before the connection object existed, so no termination listener would ever
            # fire, and the holder drops it without a close. Never counted, never uncounted.
            return
        conn.add_termination_listener(self._disconnected)
        self._advance(self._clock())
        self._open_count += 1

    def _disconnected(self, conn: asyncpg.Connection) -> None:
        self._advance(self._clock())
        self._open_count -= 1

    def _record_wait(self, wait_ms: float) -> None:
        self._wait_ms_total += wait_ms
        self._wait_ms_max = max(self._wait_ms_max, wait_ms)
        self._wait_counts[bisect.bisect_left(ACQUIRE_WAIT_BUCKETS_MS, wait_ms)] += 1

    def _sizes(self) -> tuple[int, int]:
        if self._pool is None:
            return 0, 0
        return self._pool.get_size(), self._pool.get_idle_size()

    def _health(self, idle: int) -> str:
        if self._gate.waiting > OVERLOADED_ABOVE_WAITING:
            return "overloaded"
        if idle < BUSY_BELOW_IDLE:
            return "busy"
        return "healthy"

    def get_stats(self) -> dict[str, Any]:
        """A snapshot of the pool, as a plain dict with stable keys.

        ===========================  ====================================================
        ``pool_size``                open connections now (asyncpg ``get_size``)
        ``pool_idle``                open connections not borrowed now
        ``pool_busy``                connections borrowed now
        ``pool_available``           free slots now (``pool_max_size`` when all is returned)
        ``pool_waiting``             callers queued for a slot now
        ``pool_max_size``            ``settings.max_size``
        ``pool_min_size``            ``settings.min_size``
        ``acquires``                 connections handed out
        ``acquire_timeouts``         acquires that gave up after ``acquire_timeout_s``
        ``acquire_errors``           acquires that failed to connect
        ``connection_failures``      borrowed connections found broken (then discarded)
        ``rejections``               acquires refused at once (``max_waiting`` reached)
        ``acquire_wait_ms_total``    summed wait of successful acquires
        ``acquire_wait_ms_max``      longest wait of a successful acquire
        ``acquire_wait_ms_buckets``  ``{le: count}`` over successful acquires,
                                     cumulative like Prometheus (``"+Inf"`` = acquires)
        ``busy_connection_s``        borrowed connection-seconds: each returned
                                     connection's held time, plus the held time so far of
                                     those borrowed now
        ``open_connection_s``        integral of the open pooled connections over time,
                                     from open until close has finished
        ``pool_efficiency``          busy / open connection-seconds (0.0 before any)
        ``health``                   ``overloaded`` if waiting > 5, else ``busy`` if
                                     idle < 2, else ``healthy`` (the original's rule)
        ``utilization_pct``          ``pool_busy / pool_max_size * 100``
        ``statements_sent``          statements sent on this pool's connections (the
                                     unpooled ones included), attributed or not
        ``unpooled_connections``     connections lent from outside the pool (legacy)
        ``unpooled_open``            of those, open now
        ===========================  ====================================================

        ``open_connection_s`` changes its rate at each connect and each close, whatever
        caused it (a lease, idle expiry, a background reconnect, a dead connection): see
        the module docstring, Counting. A close is seen one loop iteration late, since
        asyncpg runs termination listeners with ``call_soon``.
        """
        now = self._clock()
        self._advance(now)
        size, idle = self._sizes()
        s = self._settings
        busy_s = self._busy_s + max(0.0, self._busy * now - self._held_since_sum)
        buckets: dict[str, int] = {}
        running = 0
        for le, count in zip(
            (*(f"{b:g}" for b in ACQUIRE_WAIT_BUCKETS_MS), "+Inf"), self._wait_counts, strict=True
        ):
            running += count
            buckets[le] = running
        return {
            "pool_size": size,
            "pool_idle": idle,
            "pool_busy": self._busy,
            "pool_available": self._gate.free,
            "pool_waiting": self._gate.waiting,
            "pool_max_size": s.max_size,
            "pool_min_size": s.min_size,
            "acquires": self._acquires,
            "acquire_timeouts": self._acquire_timeouts,
            "acquire_errors": self._acquire_errors,
            "connection_failures": self._connection_failures,
            "rejections": self._rejections,
            "acquire_wait_ms_total": self._wait_ms_total,
            "acquire_wait_ms_max": self._wait_ms_max,
            "acquire_wait_ms_buckets": buckets,
            "busy_connection_s": busy_s,
            "open_connection_s": self._open_s,
            "pool_efficiency": busy_s / self._open_s if self._open_s > 0 else 0.0,
            "health": self._health(idle),
            "utilization_pct": self._busy / s.max_size * 100.0,
            "statements_sent": self._statements,
            "unpooled_connections": self._unpooled,
            "unpooled_open": self._unpooled_open,
        }

    def health_snapshot(self) -> dict[str, Any]:
        """The pool block of the original ``/api/health?detailed=true``.

        ``utilization`` counts idle connections too (total / max), as the original did.
        """
        size, idle = self._sizes()
        s = self._settings
        return {
            "total_connections": size,
            "idle_connections": idle,
            "waiting_requests": self._gate.waiting,
            "max_pool_size": s.max_size,
            "min_pool_size": s.min_size,
            "utilization": f"{round(size / s.max_size * 100)}%",
        }
