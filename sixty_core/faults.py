"""Named test faults: flaws that exist only to prove a detector works, never part of a profile.

A profile reproduces the original (legacy) or fixes it (optimized); neither carries a flaw
the original did not have, since that would inflate every measured gain. A detector (the
leak check, the statement counter's agreement with Postgres, a CI gate on statements per
request) must still be shown to catch what it claims to catch, so the harness can switch
on a fault by name (``SIXTY_TEST_FAULTS=a,b`` or ``sixty serve --inject NAME``):

=================== =========================================================================
``feed_listener_leak`` a disconnected feed client's listener is never removed (and is not
                    registered through a memory-manager scope, so only the feed's own listener
                    count and the heap show it)
``extra_query``     every authenticated request sends one more statement (``SELECT 1``),
                    counted like any other: a gate on statements per request must fail
``uncounted_query`` every authenticated request sends one statement on a connection that
                    carries no counter: the headers then under-count what Postgres saw
``task_per_request`` every authenticated request starts an asyncio task that sleeps for an
                    hour, held by nobody but a module-level set (no memory-manager scope)
``growing_list``    every authenticated request appends a small record (a dict and a
                    200-char string) to a module-level list that is never trimmed
``stale_cache``     writes no longer invalidate the query cache, so a read after a write
                    can answer from before it (what the probe's stale-read count must see)
=================== =========================================================================
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from sixty_core.errors import ConfigError

if TYPE_CHECKING:  # the type only: settings imports this module, and must stay a leaf
    from sixty_core.db.pool import Pool

TEST_FAULTS: dict[str, str] = {
    "feed_listener_leak": "feed listeners are never removed when a client disconnects",
    "extra_query": "every authenticated request sends one extra, counted statement",
    "uncounted_query": "every authenticated request sends one statement the counter misses",
    "task_per_request": "every authenticated request starts a task that nobody ends",
    "growing_list": "every authenticated request appends a record to a module-level list",
    "stale_cache": "writes do not invalidate the query cache: reads after a write go stale",
}

#: What the leak faults hold on to. Module-level on purpose: that is the leak.
_ORPHAN_TASKS: set[asyncio.Task[None]] = set()
_GROWING_LIST: list[dict[str, object]] = []


def _start_orphan_task() -> None:
    _ORPHAN_TASKS.add(asyncio.get_running_loop().create_task(asyncio.sleep(3600)))


def _grow_module_list() -> None:
    # Small objects on purpose: they live in the interpreter's own allocator, whose
    # allocated-block count is one of the counters a leak check watches.
    _GROWING_LIST.append({"n": len(_GROWING_LIST), "note": "x" * 200})


class NeverInvalidated:
    """A read cache (``sixty_core.db.repository.ReadCache``) whose invalidations are
    dropped: the ``stale_cache`` fault. Reads pass through to the cache it wraps."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def read(
        self, sql: str, params: Sequence[Any], tags: Iterable[str], load: Callable[[], Any]
    ) -> Any:
        return await self._inner.read(sql, params, tags, load)

    def invalidate(self, tags: Iterable[str]) -> None:
        return None  # the fault: the write's tags are forgotten


def parse_faults(names: str | Iterable[str]) -> frozenset[str]:
    """Fault names from a comma-separated string or an iterable; ConfigError naming the
    known faults for an unknown one."""
    items = names.split(",") if isinstance(names, str) else names
    faults = frozenset(n.strip().lower() for n in items if n.strip())
    unknown = sorted(faults - set(TEST_FAULTS))
    if unknown:
        raise ConfigError(
            f"unknown test fault(s) {', '.join(unknown)}; known: {', '.join(TEST_FAULTS)}"
        )
    return faults


class TestFaults:
    """The faults switched on for one running service, and what they need at run time.

    ``uncounted_query`` needs a connection of its own (opened at first use, closed by
    :meth:`close`); the others need nothing.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, names: frozenset[str], *, dsn: str) -> None:
        self.names = parse_faults(names)
        self._dsn = dsn
        self._raw: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def feed_listener_leak(self) -> bool:
        return "feed_listener_leak" in self.names

    async def after_authentication(self, pool: Pool) -> None:
        """Run the per-request faults (the counted one on the service's ``pool``)."""
        if "extra_query" in self.names:
            async with pool.acquire() as conn:
                await conn.execute("SELECT 1")
        if "task_per_request" in self.names:
            _start_orphan_task()
        if "growing_list" in self.names:
            _grow_module_list()
        if "uncounted_query" in self.names:
            async with self._lock:
                if self._raw is None:
                    self._raw = await asyncpg.connect(self._dsn, timeout=10, command_timeout=10)
                await self._raw.execute("SELECT 1")

    async def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            await raw.close(timeout=5)
