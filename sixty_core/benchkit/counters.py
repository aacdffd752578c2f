"""Counters per call, measured apart from the timed rounds so counting never costs time.

A *counter source* is a function returning a snapshot of running totals (for example a
cache's hits and misses, a pool's acquires, an ASGI caller's bytes). :func:`count_calls`
runs a call ``n`` times and reports, per call: the statements and auth lookups recorded on
the connection (:mod:`sixty_core.db.recorder`), the delta of every numeric total of every
source, and, when memray can trace, the allocations made (memray's Tracker with Python
allocators traced, so pymalloc's small objects count as well as malloc's).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import memray

from sixty_core.db.recorder import recording

Call = Callable[[], Awaitable[Any]]
CounterSource = Callable[[], Mapping[str, float]]

#: memray allocator kinds that allocate (the rest free or unmap).
_ALLOCATING = frozenset(
    {
        memray.AllocatorType.PYMALLOC_MALLOC,
        memray.AllocatorType.PYMALLOC_CALLOC,
        memray.AllocatorType.PYMALLOC_REALLOC,
        memray.AllocatorType.MALLOC,
        memray.AllocatorType.CALLOC,
        memray.AllocatorType.REALLOC,
        memray.AllocatorType.POSIX_MEMALIGN,
        memray.AllocatorType.ALIGNED_ALLOC,
        memray.AllocatorType.MEMALIGN,
        memray.AllocatorType.VALLOC,
        memray.AllocatorType.PVALLOC,
        memray.AllocatorType.MMAP,
    }
)


def _numeric(snapshot: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in snapshot.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _snapshot(sources: Mapping[str, CounterSource]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for prefix, source in sources.items():
        for key, value in _numeric(source()).items():
            merged[f"{prefix}.{key}"] = value
    return merged


async def _run(call: Call, n: int) -> tuple[int, int]:
    statements = auth = 0
    for _ in range(n):
        with recording() as tally:
            await call()
        statements += tally.statements
        auth += tally.auth_lookups
    return statements, auth


def count_calls(
    loop: asyncio.AbstractEventLoop,
    call: Call,
    n: int,
    sources: Mapping[str, CounterSource] | None = None,
    *,
    keys: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Per-call counters over ``n`` calls of ``call`` on ``loop`` (which must not be running).

    Returns ``statements``, ``auth_lookups`` and, for each source ``name``, ``name.total``
    deltas per call (only ``keys`` if given, and only those that changed). Rounded to
    three decimals: a counter is an average over ``n`` deterministic calls.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    sources = dict(sources or {})
    before = _snapshot(sources)
    statements, auth = loop.run_until_complete(_run(call, n))
    after = _snapshot(sources)
    counters: dict[str, float] = {
        "statements": round(statements / n, 3),
        "auth_lookups": round(auth / n, 3),
    }
    for key, value in after.items():
        if keys is not None and key not in keys:
            continue
        delta = value - before.get(key, 0.0)
        if delta:
            counters[key] = round(delta / n, 3)
    return counters


def allocations_per_call(loop: asyncio.AbstractEventLoop, call: Call, n: int) -> float | None:
    """Allocations per call of ``call`` (memray, Python allocators traced), or None when a
    memray tracker is already active in this process (pytest --memray) and cannot nest."""
    with tempfile.TemporaryDirectory(prefix="sixty-bench-") as folder:
        capture = Path(folder) / "allocations.bin"
        try:
            tracker = memray.Tracker(capture, trace_python_allocators=True)
            tracker.__enter__()
        except RuntimeError:
            return None
        try:
            loop.run_until_complete(_repeat(call, n))
        finally:
            tracker.__exit__(None, None, None)
        reader = memray.FileReader(os.fspath(capture))
        try:
            made = sum(
                record.n_allocations
                for record in reader.get_allocation_records()
                if record.allocator in _ALLOCATING
            )
        finally:
            reader.close()
    return round(made / n, 1)


async def _repeat(call: Call, n: int) -> None:
    for _ in range(n):
        await call()
