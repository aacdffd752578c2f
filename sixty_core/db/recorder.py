"""Per-request tallies of database work, counted on the connection where statements are sent.

Every connection this process lends (pooled, the legacy profile's unpooled fallback, the
edge upstream's) is counted by its lease (:class:`~sixty_core.db.pool.Pool`): asyncpg's
protocol object for the connection counts every message it sends that runs SQL
(``queries_count``: ``execute``/``fetch*`` calls, ``BEGIN``/``COMMIT``/``ROLLBACK`` of a
transaction, the pool's reset on release ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
UNLISTEN *; RESET ALL;``, one message, type introspection), and what it counted while lent
goes to the borrower's tally when the lease ends (:func:`count_statements`). Nothing is
tallied by hand at call sites, so a statement added anywhere is counted, and one counted
statement is one ``LOG: statement``/``LOG: execute`` line that Postgres writes with
``log_statement = 'all'`` (the tests hold the two equal).

The API opens a :class:`Tally` per request (:func:`recording`). The tally lives in a context
variable, so work done from tasks the request starts (a cache load) is counted for that
request too. A tally is complete as soon as the request's leases have ended: counting is
synchronous (an asyncpg query logger, used before, ran a loop turn later and cost a
callback per statement).

One condition of exactness, stated where the counts are shown: under concurrency, a request
that joins another request's in-flight cache load sends no statement: the load's statements
are counted for the request that started it. The joiner counts a *joined load* instead
(:func:`count_joined_load`). Sent one request at a time (as ``sixty probe`` does), the
counts per request are deterministic.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class Tally:
    """Counts for one unit of work (usually one HTTP request).

    ``statements`` includes ``edge_statements``: those the edge upstream sent for this
    request, as it reported them.
    """

    statements: int = 0
    auth_lookups: int = 0
    joined_loads: int = 0
    edge_statements: int = 0


_current: ContextVar[Tally | None] = ContextVar("sixty_statement_tally", default=None)


class recording:
    """Count the statements sent inside the block (in this task and the tasks it starts).

    Blocks nest: when an inner block ends, its counts are added to the enclosing block's
    tally too (a benchmark counting whole ASGI calls sees what each request counted). Counts
    that reach the inner tally after its block ended (a task it started, still running)
    stay with the inner tally only. (A class rather than a generator context manager: it is
    entered once per request.)
    """

    __slots__ = ("_outer", "_tally", "_token")

    def __enter__(self) -> Tally:
        self._outer = _current.get()
        self._tally = Tally()
        self._token = _current.set(self._tally)
        return self._tally

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._token)
        outer, tally = self._outer, self._tally
        if outer is not None:
            outer.statements += tally.statements
            outer.auth_lookups += tally.auth_lookups
            outer.joined_loads += tally.joined_loads
            outer.edge_statements += tally.edge_statements


def current_tally() -> Tally | None:
    """The tally of the unit of work running now, or None outside :func:`recording`."""
    return _current.get()


def count_statements(sent: int = 1) -> None:
    """``sent`` statements were sent on a connection for the current work (the pool's
    leases call this when they end)."""
    tally = _current.get()
    if tally is not None:
        tally.statements += sent


def count_auth_lookup() -> None:
    """One session/user lookup was made (a logical lookup; its statements count apart)."""
    tally = _current.get()
    if tally is not None:
        tally.auth_lookups += 1


def count_joined_load() -> None:
    """This request joined another's in-flight cache load and sent nothing for it."""
    tally = _current.get()
    if tally is not None:
        tally.joined_loads += 1


def add_statements(count: int) -> None:
    """Add statements another process (the edge upstream) sent for this request."""
    tally = _current.get()
    if tally is not None and count > 0:
        tally.statements += count
        tally.edge_statements += count
