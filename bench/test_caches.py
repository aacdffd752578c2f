"""The service cache's building blocks (only the optimized profile has caches): a hit, a
miss that loads, an eviction, many callers sharing one load, and a tag invalidation."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from sixty_core.benchkit.timing import AsyncBench
from sixty_core.cache import Cache, NamespaceConfig

ROW = {"id": "d1", "name": "Acme renewal", "value": 12_000}
#: Concurrent callers of one missing key in the single-flight benchmark.
CONTENDERS = 32


def _cache(maxsize: int = 1024) -> Cache:
    return Cache([NamespaceConfig("bench", maxsize=maxsize, ttl_s=3600.0)])


def _stats(cache: Cache) -> Any:
    return lambda: cache.get_stats()


async def _load() -> dict[str, Any]:
    return ROW


def test_hit(abench: AsyncBench) -> None:
    cache = _cache()
    cache.set("bench", "warm", ROW)

    async def hit() -> Any:
        return await cache.get_or_load("bench", "warm", _load)

    abench(hit, sources={"cache": _stats(cache)}, keys=("cache.cache_hits",))
    assert cache.get_stats()["cache_misses"] == 0


def test_miss_and_load(abench: AsyncBench) -> None:
    cache = _cache(maxsize=1_000_000)
    keys = itertools.count()

    async def miss() -> Any:
        return await cache.get_or_load("bench", next(keys), _load)

    abench(miss, sources={"cache": _stats(cache)}, keys=("cache.cache_misses", "cache.cache_loads"))
    assert cache.get_stats()["cache_hits"] == 0


def test_eviction(abench: AsyncBench) -> None:
    cache = _cache(maxsize=64)
    keys = itertools.count()
    for _ in range(64):
        cache.set("bench", next(keys), ROW)

    async def evict() -> None:
        cache.set("bench", next(keys), ROW)  # the namespace is full: one LRU entry goes

    abench(evict, sources={"cache": _stats(cache)}, keys=("cache.cache_evictions",))
    assert cache.get_stats()["cache_entries"] == 64


def test_single_flight(abench: AsyncBench) -> None:
    """CONTENDERS callers miss the same key at once: one load, the rest join it."""
    cache = _cache(maxsize=1_000_000)
    keys = itertools.count()

    async def slow_load() -> dict[str, Any]:
        await asyncio.sleep(0)  # still loading when the other callers arrive
        return ROW

    async def stampede() -> None:
        key = next(keys)
        await asyncio.gather(
            *(cache.get_or_load("bench", key, slow_load) for _ in range(CONTENDERS))
        )

    abench(
        stampede,
        sources={"cache": _stats(cache)},
        keys=("cache.cache_loads", "cache.cache_joins", "cache.cache_misses"),
    )
    stats = cache.get_stats()
    assert stats["cache_joins"] == (CONTENDERS - 1) * stats["cache_loads"]


def test_invalidate_tag(abench: AsyncBench) -> None:
    """Fill 50 entries under one tag, then drop them all by the tag."""
    cache = _cache()

    async def invalidate() -> int:
        for i in range(50):
            cache.set("bench", i, ROW, tags=("deals:owner-1",))
        return cache.invalidate_tags("deals:owner-1")

    dropped = abench(
        invalidate, sources={"cache": _stats(cache)}, keys=("cache.cache_invalidations",)
    )
    assert dropped == 50
