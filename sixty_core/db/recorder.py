"""Per-request tallies of database work: queries run and auth lookups made.

The API opens a :class:`Tally` for each request (:func:`recording`); the repository calls
:func:`count_query` for every statement that reaches Postgres (cache hits do not). The
counts are deterministic for a given request and profile, so tests and CI gates can trust
them on a noisy machine where timings cannot be trusted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class Tally:
    """Counts for one unit of work (usually one HTTP request)."""

    queries: int = 0
    auth_lookups: int = 0


_current: ContextVar[Tally | None] = ContextVar("sixty_query_tally", default=None)


@contextmanager
def recording() -> Iterator[Tally]:
    """Count the queries made inside the block (in this task and tasks it starts)."""
    tally = Tally()
    token = _current.set(tally)
    try:
        yield tally
    finally:
        _current.reset(token)


def count_query(*, auth: bool = False) -> None:
    """Record one statement sent to Postgres; ``auth`` marks a session/user lookup."""
    tally = _current.get()
    if tally is not None:
        tally.queries += 1
        if auth:
            tally.auth_lookups += 1
