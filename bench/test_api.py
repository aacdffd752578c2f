"""The hot endpoints through the whole ASGI app, in process (no network), each beside the
stack's own limits measured in the same rounds: a bare Starlette hello and, for the
uncached read, a bare Starlette + asyncpg primary-key lookup.

Ratios are time per request over time per request: ``legacy/optimized`` is optimized's
speed-up, ``optimized/hello`` what a request costs over the bare framework (every profile
after the first is set against the hello).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bench.support import BenchStack
from sixty_core.benchkit.asgi import AsgiCaller
from sixty_core.benchkit.bare import hello_app, pk_lookup_app
from sixty_core.benchkit.timing import AsyncBench

KEYS = ("http.bytes_received", "pool.acquires", "cache.cache_hits", "cache.cache_misses")


def _deal_id(stack: BenchStack) -> str:
    caller = stack.app(stack.profiles[-1])
    reply = stack.run(caller("GET", "/api/deals?limit=1", headers=stack.bearer(stack.rep)))
    assert reply.status == 200, reply.body
    deal_id: str = msgspec.json.decode(reply.body)["data"][0]["id"]
    return deal_id


def _endpoint_call(stack: BenchStack, caller: AsgiCaller, path: str) -> Any:
    headers = stack.bearer(stack.rep)

    async def call() -> int:
        reply = await caller("GET", path, headers=headers)
        if reply.status != 200:
            raise AssertionError(f"GET {path}: {reply.status} {reply.body[:200]!r}")
        return reply.status

    return call


def _sources(stack: BenchStack, profile: str, caller: AsgiCaller) -> dict[str, Any]:
    comp = stack.components(profile)
    return {
        "http": lambda: {"bytes_received": caller.bytes_received},
        "pool": comp.pool.get_stats,
        "cache": comp.cache.get_stats,
    }


def _hello(stack: BenchStack) -> tuple[Any, dict[str, Any]]:
    caller = AsgiCaller(hello_app())

    async def call() -> int:
        return (await caller("GET", "/hello")).status

    return call, {"http": lambda: {"bytes_received": caller.bytes_received}}


@pytest.mark.parametrize(
    "path", ["/api/stages", "/api/deals?limit=50", "/api/deals/{id}", "/api/deals/pipeline-stats"]
)
def test_cached_endpoint(abench: AsyncBench, stack: BenchStack, path: str) -> None:
    """Every profile (caches warm) and the bare hello, interleaved."""
    real_path = path.replace("{id}", _deal_id(stack))
    calls: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for profile in stack.profiles:
        caller = stack.app(profile)
        calls[profile] = _endpoint_call(stack, caller, real_path)
        sources[profile] = _sources(stack, profile, caller)
    calls["hello"], sources["hello"] = _hello(stack)
    abench.compare(
        calls,
        ratios=[*stack.ratios, *((p, "hello") for p in stack.profiles[1:])],
        sources=sources,
        keys=KEYS,
    )
    cached = ("static_cache",) if path == "/api/stages" else ("query_cache",)
    for profile in stack.profiles:
        counters = abench.benchmark.extra_info["sides"][profile]["counters"]
        if all(stack.has(profile, flag) for flag in ("session_cache", *cached)):
            assert counters["statements"] == 0, profile
        else:
            assert counters["statements"] >= 1, profile


def test_uncached_get_deal(abench: AsyncBench, stack: BenchStack) -> None:
    """``GET /api/deals/{id}`` with the query cache off against the bare primary-key lookup
    (its own asyncpg pool, the same sizes, a reset that sends nothing)."""
    deal_id = _deal_id(stack)
    profile = "optimized-no-query_cache"
    caller = stack.app(profile)
    bare = AsgiCaller(stack.enter(pk_lookup_app(stack.dsn)))
    calls = {
        profile: _endpoint_call(stack, caller, f"/api/deals/{deal_id}"),
        "bare_pk_lookup": _endpoint_call(stack, bare, f"/deals/{deal_id}"),
    }
    sources = {
        profile: _sources(stack, profile, caller),
        "bare_pk_lookup": {"http": lambda: {"bytes_received": bare.bytes_received}},
    }
    abench.compare(calls, ratios=[(profile, "bare_pk_lookup")], sources=sources, keys=KEYS)
    sides = abench.benchmark.extra_info["sides"]
    # The bare pool carries no statement counter (it is the limit, without our extras).
    assert sides[profile]["counters"]["statements"] == 1
