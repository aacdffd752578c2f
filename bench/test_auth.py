"""Authentication: without ``session_cache`` (legacy) every request looks the session up in
Postgres; with it (optimized) a warm token is a cache hit."""

from __future__ import annotations

from typing import Any

from bench.support import BenchStack
from sixty_core.benchkit.timing import AsyncBench
from sixty_core.tokens import hash_token

KEYS = ("pool.acquires", "cache.cache_hits", "cache.cache_misses")


def test_authenticate(abench: AsyncBench, stack: BenchStack) -> None:
    token_hash = hash_token(stack.rep.token)
    calls: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for profile in stack.profiles:
        comp = stack.components(profile)

        async def authenticate(comp: Any = comp) -> Any:
            return await comp.auth.authenticate(token_hash)

        calls[profile] = authenticate
        sources[profile] = {"pool": comp.pool.get_stats, "cache": comp.cache.get_stats}
    abench.compare(calls, ratios=stack.ratios, sources=sources, keys=KEYS)
    for profile, side in abench.benchmark.extra_info["sides"].items():
        counters = side["counters"]
        if stack.has(profile, "session_cache"):
            assert counters["auth_lookups"] == 0 and counters["statements"] == 0
            assert counters["cache.cache_hits"] == 1
        else:
            assert counters["auth_lookups"] >= 1 and counters["statements"] >= 1
