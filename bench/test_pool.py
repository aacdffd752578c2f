"""The connection pool: a borrow and return with asyncpg's default reset (one statement on
every release) against the cheap reset; and contention at twice the pool's size."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from bench.support import BenchStack
from sixty_core.benchkit.timing import AsyncBench
from sixty_core.db.pool import LEGACY_POOL, OPTIMIZED_POOL, Pool

KEYS = ("pool.acquires", "pool.statements_sent")


def test_acquire_release(abench: AsyncBench, stack: BenchStack) -> None:
    """Same sizes, only the reset differs: the reset's cost alone."""
    calls: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for name, fast in (("default_reset", False), ("cheap_reset", True)):
        settings = dataclasses.replace(OPTIMIZED_POOL, fast_reset=fast)
        pool = stack.enter(Pool(stack.dsn, settings, application_name=f"bench_{name}"))

        async def borrow(pool: Pool = pool) -> None:
            async with pool.acquire():
                pass

        calls[name] = borrow
        sources[name] = {"pool": pool.get_stats}
    abench.compare(calls, ratios=[("default_reset", "cheap_reset")], sources=sources, keys=KEYS)
    sides = abench.benchmark.extra_info["sides"]
    assert sides["default_reset"]["counters"]["statements"] == 1
    assert sides["cheap_reset"]["counters"]["statements"] == 0


@pytest.mark.parametrize("pool_tuning", [False, True], ids=["legacy_pool", "optimized_pool"])
def test_contention(abench: AsyncBench, stack: BenchStack, pool_tuning: bool) -> None:
    """2 x max_size callers each borrow a connection and run ``SELECT 1``; one call is the
    whole stampede (so legacy's 40 callers and optimized's 30 are not a like-for-like
    ratio: each is its own pool at twice its size)."""
    settings = OPTIMIZED_POOL if pool_tuning else LEGACY_POOL
    profile = "optimized" if pool_tuning else "legacy"
    pool = stack.enter(Pool(stack.dsn, settings, application_name=f"bench_contend_{profile}"))
    callers = 2 * settings.max_size

    async def one() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def stampede() -> None:
        await asyncio.gather(*(one() for _ in range(callers)))

    abench(stampede, sources={"pool": pool.get_stats}, keys=KEYS)
    assert abench.benchmark.extra_info["counters"]["pool.acquires"] == callers
