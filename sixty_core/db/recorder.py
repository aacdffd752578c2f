"""Per-request tallies of database work, counted on the connection where statements are sent.

Every connection this process opens (pooled, the legacy profile's unpooled fallback, the
edge upstream's) carries :func:`count_statement` as an asyncpg *query logger*. asyncpg calls
its loggers for every message it sends that runs SQL: ``execute``/``fetch*`` calls,
``BEGIN``/``COMMIT``/``ROLLBACK`` of a transaction, the pool's reset on release
(``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;``, one message),
type introspection. Nothing is tallied by hand at call sites, so a statement added anywhere
is counted, and one counted statement is one ``LOG: statement``/``LOG: execute`` line that
Postgres writes with ``log_statement = 'all'`` (the tests hold the two equal).

The API opens a :class:`Tally` per request (:func:`recording`). The tally lives in a context
variable, so statements sent from tasks the request starts (a cache load, asyncpg's shielded
release) are counted for that request too.

Two conditions of exactness, both stated where the counts are shown:

- asyncpg runs query loggers with ``loop.call_soon``, one loop iteration after the
  statement completed. :func:`settle` yields once so that every statement completed so far
  is counted; read a tally only after it.
- Under concurrency, a request that joins another request's in-flight cache load sends no
  statement: the load's statements are counted for the request that started it. The joiner
  counts a *joined load* instead (:func:`count_joined_load`). Sent one request at a time (as
  ``sixty probe`` does), the counts per request are deterministic.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


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
    #: A connection was borrowed for this work (:func:`note_db_use`): only then can a
    #: statement's logger still be pending, and only then does :func:`settle` need to wait.
    db_used: bool = False


_current: ContextVar[Tally | None] = ContextVar("sixty_statement_tally", default=None)


class recording:
    """Count the statements sent inside the block (in this task and the tasks it starts).

    Blocks nest: when an inner block ends, its counts are added to the enclosing block's
    tally too (a benchmark counting whole ASGI calls sees what each request counted). Counts
    that reach the inner tally after its block ended (a logger not yet run: see
    :func:`settle`) stay with the inner tally only. (A class rather than a generator
    context manager: it is entered once per request.)
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
            outer.db_used = outer.db_used or tally.db_used


def current_tally() -> Tally | None:
    """The tally of the unit of work running now, or None outside :func:`recording`."""
    return _current.get()


def count_statement(record: Any) -> None:
    """asyncpg query logger: one statement was sent on a connection (``record`` unused)."""
    tally = _current.get()
    if tally is not None:
        tally.statements += 1


def note_db_use() -> None:
    """A connection is being borrowed for the current work (the pool calls this on every
    acquire, pooled or not): statements may follow, so a later :func:`settle` must wait."""
    tally = _current.get()
    if tally is not None:
        tally.db_used = True


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


async def settle(tally: Tally | None = None) -> None:
    """Let the query loggers of every statement completed so far run (one loop turn).

    asyncpg schedules each logger with ``call_soon`` when its statement completes; a task
    that yields once resumes after every callback scheduled before it (the ready queue is
    FIFO), so the tally is then complete up to this point.

    Given the ``tally`` about to be read, it returns at once when that work borrowed no
    connection (a cache hit sends nothing, so no logger can be pending): one loop turn
    less for every cached request.
    """
    if tally is not None and not tally.db_used:
        return
    await asyncio.sleep(0)
