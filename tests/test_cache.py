"""Specification of sixty_core.cache: LRU+TTL namespaces, tags, single-flight, stale-set safety."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from asyncpg.pgproto import pgproto
from hypothesis import given, settings
from hypothesis import strategies as st

from sixty_core.cache import (
    DEFAULT_NAMESPACES,
    Cache,
    NamespaceConfig,
    _freeze,
    encoded_size,
    freeze,
    query_key,
)
from sixty_core.errors import ConfigError


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def make_cache(maxsize: int = 8, ttl_s: float = 60.0) -> tuple[Cache, FakeClock]:
    clock = FakeClock()
    namespaces = [NamespaceConfig("a", maxsize, ttl_s), NamespaceConfig("b", maxsize, ttl_s)]
    return Cache(namespaces, clock=clock), clock


class Gate:
    """A loader that counts its calls and blocks until released."""

    def __init__(self, value: Any = "v") -> None:
        self.value = value
        self.calls = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        try:
            await asyncio.wait_for(self.release.wait(), timeout=5)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return self.value


async def settle() -> None:
    """Let every ready task run a few steps."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- configuration ----------------------------------------------------------------------------


def test_default_namespaces_are_bounded_with_documented_ttls() -> None:
    """The defaults hold stages 1 h, owners and companies 15 min, sessions 60 s, queries 5 min."""
    ttl = {c.name: c.ttl_s for c in DEFAULT_NAMESPACES}
    assert ttl == {"stages": 3600, "owners": 900, "companies": 900, "sessions": 60, "queries": 300}
    assert all(c.maxsize >= 1 for c in DEFAULT_NAMESPACES)
    assert set(Cache().get_stats()["namespaces"]) == set(ttl)


def test_unknown_namespace_raises_config_error_naming_it() -> None:
    """Every operation on an unknown namespace raises ConfigError naming it."""
    cache, _ = make_cache()
    with pytest.raises(ConfigError, match="'nope'"):
        cache.get("nope", 1)
    with pytest.raises(ConfigError):
        cache.set("nope", 1, 1)
    with pytest.raises(ConfigError):
        cache.clear("nope")


def test_bad_namespace_configs_are_rejected() -> None:
    """Zero maxsize, non-positive TTL and duplicate names raise ValueError."""
    with pytest.raises(ValueError, match="maxsize"):
        NamespaceConfig("x", 0, 1.0)
    with pytest.raises(ValueError, match="ttl_s"):
        NamespaceConfig("x", 1, 0.0)
    with pytest.raises(ValueError, match="duplicate"):
        Cache([NamespaceConfig("x", 1, 1.0), NamespaceConfig("x", 2, 1.0)])


# -- LRU, TTL, tags, clear, shrink ----------------------------------------------------------


def test_get_refreshes_recency_so_the_other_key_is_evicted() -> None:
    """A full namespace evicts the least recently used key, and a get counts as a use."""
    cache, _ = make_cache(maxsize=2)
    cache.set("a", "k1", 1)
    cache.set("a", "k2", 2)
    assert cache.get("a", "k1") == (True, 1)
    cache.set("a", "k3", 3)
    assert cache.get("a", "k2") == (False, None)
    assert cache.get("a", "k1") == (True, 1)
    assert cache.get_stats()["namespaces"]["a"]["evictions"] == 1


def test_entry_is_served_until_its_ttl_and_then_expires() -> None:
    """An entry is a hit at 59.9 s and a counted expiry at 60.1 s."""
    cache, clock = make_cache(ttl_s=60.0)
    cache.set("a", "k", "v")
    clock.tick(59.9)
    assert cache.get("a", "k") == (True, "v")
    clock.tick(0.2)
    assert cache.get("a", "k") == (False, None)
    stats = cache.get_stats()
    assert (stats["cache_expirations"], stats["cache_entries"]) == (1, 0)


async def test_expiry_reloads_at_most_once_per_ttl() -> None:
    """Across K TTL expiries of a hot key, the loader runs K+1 times."""
    cache, clock = make_cache(ttl_s=10.0)
    calls = 0

    async def loader() -> int:
        nonlocal calls
        calls += 1
        return calls

    for _ in range(4):
        for _ in range(20):
            await cache.get_or_load("a", "k", loader)
            clock.tick(0.1)
        clock.tick(10.0)
    assert calls == 4


def test_invalidate_tags_drops_tagged_entries_in_every_namespace_only() -> None:
    """invalidate_tags("owner:A") drops A's entries in all namespaces and keeps B's."""
    cache, _ = make_cache()
    cache.set("a", 1, "a1", tags=["owner:A", "table:deals"])
    cache.set("b", 2, "a2", tags=["owner:A"])
    cache.set("a", 3, "b1", tags=["owner:B", "table:deals"])
    cache.set("a", 4, "untagged")
    assert cache.invalidate_tags("owner:A") == 2
    assert [cache.get(ns, k)[0] for ns, k in [("a", 1), ("b", 2), ("a", 3), ("a", 4)]] == [
        False,
        False,
        True,
        True,
    ]
    assert cache.invalidate_tags("table:deals") == 1
    assert cache.get_stats()["cache_invalidations"] == 3


async def test_lazy_tags_are_read_once_on_a_miss_and_never_on_a_hit() -> None:
    """get_or_load takes one-shot tags (the repository passes a generator): a miss stores
    the entry under all of them, a hit never starts the generator."""
    cache, _ = make_cache()
    started = 0

    def tags() -> Iterator[str]:
        nonlocal started
        started += 1
        yield "deal:1"
        yield "owner:A"

    async def loader() -> str:
        return "row"

    assert await cache.get_or_load("a", "k", loader, tags=tags()) == "row"
    assert await cache.get_or_load("a", "k", loader, tags=tags()) == "row"
    assert started == 1
    assert cache.invalidate_tags("owner:A") == 1
    assert cache.get("a", "k")[0] is False


def test_overwriting_an_entry_replaces_its_tags() -> None:
    """A set with new tags forgets the old ones, so the old tag no longer reaches it."""
    cache, _ = make_cache()
    cache.set("a", 1, "x", tags=["t:old"])
    cache.set("a", 1, "y", tags=["t:new"])
    assert cache.invalidate_tags("t:old") == 0
    assert cache.invalidate_tags("t:new") == 1


def test_invalidate_and_clear_drop_entries() -> None:
    """invalidate drops one key, clear(ns) one namespace, clear() everything."""
    cache, _ = make_cache()
    cache.preload("a", {1: "x", 2: "y"}, tags=["t"])
    cache.preload("b", {1: "z"})
    assert cache.invalidate("a", 1) is True
    assert cache.invalidate("a", 1) is False
    assert cache.clear("a") == 1
    assert cache.get("b", 1) == (True, "z")
    assert cache.invalidate_tags("t") == 0  # the tag index was cleared with the entries
    assert cache.clear() == 1
    assert cache.get_stats()["cache_entries"] == 0


def test_shrink_evicts_the_least_recently_used_fraction() -> None:
    """shrink(0.5) evicts half of each namespace, oldest first, and reports how many."""
    cache, _ = make_cache(maxsize=100)
    cache.preload("a", {i: i for i in range(10)})
    cache.preload("b", {i: i for i in range(3)})
    cache.get("a", 0)  # now the most recently used
    assert cache.shrink(0.5) == 5 + 2
    assert [k for k in range(10) if cache.get("a", k)[0]] == [0, 6, 7, 8, 9]
    assert cache.shrink(0.0) == 0
    with pytest.raises(ValueError, match="fraction"):
        cache.shrink(1.5)


def test_many_keys_never_exceed_maxsize() -> None:
    """Ten thousand distinct keys leave at most maxsize entries per namespace."""
    cache, _ = make_cache(maxsize=50)
    for i in range(10_000):
        cache.set("a", i, i, tags=[f"t{i}"])
    stats = cache.get_stats()
    assert stats["namespaces"]["a"]["entries"] == 50
    assert stats["cache_evictions"] == 10_000 - 50


def rows(n: int, note: str = "x" * 100) -> list[dict[str, Any]]:
    """``n`` deal-like rows, each with its own strings (as rows decoded from Postgres)."""
    return [{"id": uuid.uuid4(), "name": f"deal {i}", "notes": f"{note}{i}"} for i in range(n)]


def test_encoded_size_is_the_json_length_with_unknown_types_as_text() -> None:
    """A value is charged its JSON's length as the API encodes it (UUIDs, dates, Decimal
    as a number); a type msgspec does not know counts as its text, never an error."""
    row = freeze({"id": uuid.UUID(int=1), "value": Decimal("12.50"), "day": date(2026, 1, 2)})
    expected = b'{"id":"00000000-0000-0000-0000-000000000001","value":12.50,"day":"2026-01-02"}'
    assert encoded_size(row) == len(expected)
    thing = object()
    assert encoded_size(freeze({"thing": thing})) == len(f'{{"thing":"{thing}"}}')


def byte_bounded(max_bytes: int, maxsize: int = 1000) -> Cache:
    return Cache([NamespaceConfig("q", maxsize, 60.0, max_bytes=max_bytes)], clock=FakeClock())


def test_a_byte_bounded_namespace_evicts_the_least_recent_to_stay_within_its_bytes() -> None:
    """Pages of rows fill the byte budget; each new page evicts the least recently used
    ones, and the bytes held never pass the budget."""
    page = freeze(rows(20))
    budget = 3 * encoded_size(page) + encoded_size(page) // 2  # room for three pages
    cache = byte_bounded(budget)
    for key in range(3):
        cache.set("q", key, freeze(rows(20)))
    assert cache.get("q", 0)[0]  # key 0 is now the most recently used
    cache.set("q", 3, freeze(rows(20)))
    assert [k for k in range(4) if cache.get("q", k)[0]] == [0, 2, 3]
    ns = cache.get_stats()["namespaces"]["q"]
    assert (ns["entries"], ns["evictions"], ns["max_bytes"]) == (3, 1, budget)
    assert ns["bytes"] == sum(encoded_size(cache.get("q", k)[1]) for k in (0, 2, 3))
    assert ns["bytes"] <= budget


def test_a_byte_bounded_namespace_still_holds_at_most_maxsize_entries() -> None:
    """Small values under a large byte budget are still bounded by the entry count."""
    cache = byte_bounded(10**9, maxsize=5)
    for key in range(12):
        cache.set("q", key, key, tags=[f"t{key}"])
    ns = cache.get_stats()["namespaces"]["q"]
    assert (ns["entries"], ns["evictions"]) == (5, 7)
    assert cache.invalidate_tags(*(f"t{k}" for k in range(12))) == 5


async def test_a_value_larger_than_the_byte_budget_is_returned_but_not_kept() -> None:
    """A load whose value exceeds the whole budget reaches its caller, is not stored, is
    counted, and takes an older value of its key with it (else that older value would
    outlive a write's invalidation)."""
    small, big = freeze(rows(1)), rows(200)
    cache = byte_bounded(encoded_size(small) * 3)
    cache.set("q", "k", small, tags=["deals"])
    cache.set("q", "other", small)

    async def load() -> list[dict[str, Any]]:
        return big

    got = await cache.get_or_load("q", "big", load, tags=["deals"])
    assert [dict(r) for r in got] == big
    assert cache.get("q", "big") == (False, None)
    cache.set("q", "k", big, tags=["deals"])  # replaces the small value, or tries to
    assert cache.get("q", "k") == (False, None)
    assert cache.get("q", "other")[0]  # nothing else was evicted to make room in vain
    stats = cache.get_stats()
    assert (stats["cache_too_large"], stats["namespaces"]["q"]["too_large"]) == (2, 2)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["set", "get", "invalidate", "tags"]),
            st.integers(0, 9),  # key
            st.sampled_from([0, 1, 3, 10, 25]),  # rows in the value
        ),
        max_size=60,
    )
)
def test_a_byte_bounded_namespace_holds_its_bounds_after_every_step(
    steps: list[tuple[str, int, int]],
) -> None:
    """C5 with bytes: after every set, get, invalidation and tag invalidation, the bytes
    held are the live values' bytes, within the budget, and the entries within maxsize;
    every value read is the last one stored under its key."""
    budget = 3 * encoded_size(freeze(rows(20)))
    cache = byte_bounded(budget, maxsize=4)
    stored: dict[int, Any] = {}
    for op, key, n in steps:
        if op == "set":
            stored[key] = freeze(rows(n))
            cache.set("q", key, stored[key], tags=[f"t{key % 3}"])
        elif op == "get":
            hit, value = cache.get("q", key)
            assert not hit or value is stored[key]
        elif op == "invalidate":
            cache.invalidate("q", key)
        else:
            cache.invalidate_tags(f"t{key % 3}")
        ns = cache.get_stats()["namespaces"]["q"]
        live = [k for k in range(10) if k in cache._store("q")]  # (no recency change)
        assert ns["bytes"] == sum(encoded_size(stored[k]) for k in live) <= budget
        assert ns["entries"] == len(live) <= 4


def test_a_byte_budget_below_one_is_rejected() -> None:
    """max_bytes must be a positive number of bytes, or None for no byte bound."""
    with pytest.raises(ValueError, match="max_bytes"):
        NamespaceConfig("x", 1, 1.0, max_bytes=0)


def test_stats_count_hits_misses_and_reset() -> None:
    """get_stats reports totals, a hit rate of 0.0 without traffic, and reset_stats zeroes it."""
    cache, _ = make_cache()
    assert cache.get_stats()["cache_hit_rate"] == 0.0
    cache.set("a", 1, 1)
    cache.get("a", 1)
    cache.get("a", 1)
    cache.get("a", 2)
    cache.get("b", 2)
    stats = cache.get_stats()
    assert (stats["cache_hits"], stats["cache_misses"], stats["cache_hit_rate"]) == (2, 2, 0.5)
    assert (
        stats["namespaces"]["a"].items()
        >= {
            "hits": 2,
            "misses": 1,
            "entries": 1,
            "maxsize": 8,
            "ttl_s": 60.0,
        }.items()
    )
    for key in ["loads", "load_errors", "evictions", "expirations", "invalidations"]:
        assert stats[f"cache_{key}"] == 0
    cache.reset_stats()
    stats = cache.get_stats()
    assert (stats["cache_hits"], stats["cache_misses"], stats["cache_entries"]) == (0, 0, 1)


# -- get_or_load: single-flight, errors, cancellation -------------------------------------


async def test_200_concurrent_misses_run_the_loader_once() -> None:
    """Two hundred concurrent misses of one key share one load and all get its result."""
    cache, _ = make_cache()
    gate = Gate(value={"id": 7})
    waiters = [asyncio.create_task(cache.get_or_load("a", "k", gate)) for _ in range(200)]
    await settle()
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert gate.calls == 1
    assert all(r is results[0] for r in results)
    stats = cache.get_stats()
    assert (stats["cache_misses"], stats["cache_loads"], stats["cache_entries"]) == (200, 1, 1)
    assert await cache.get_or_load("a", "k", gate) == {"id": 7}
    assert gate.calls == 1


async def test_loader_errors_reach_every_waiter_and_are_not_cached() -> None:
    """A failing load raises in every waiter, is counted, and the next call loads again."""
    cache, _ = make_cache()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise RuntimeError("boom")
        return "ok"

    results = await asyncio.gather(
        *(cache.get_or_load("a", "k", flaky) for _ in range(3)), return_exceptions=True
    )
    assert [type(r) for r in results] == [RuntimeError] * 3
    assert await cache.get_or_load("a", "k", flaky) == "ok"
    stats = cache.get_stats()
    assert (calls, stats["cache_load_errors"], stats["cache_loads"]) == (2, 1, 2)


async def test_cancelling_one_waiter_keeps_the_shared_load() -> None:
    """Cancelling one of three waiters leaves the load running for the other two."""
    cache, _ = make_cache()
    gate = Gate()
    waiters = [asyncio.create_task(cache.get_or_load("a", "k", gate)) for _ in range(3)]
    await settle()
    waiters[0].cancel()
    await settle()
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), timeout=5)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == ["v", "v"]
    assert (gate.calls, gate.cancelled) == (1, 0)
    assert cache.get("a", "k") == (True, "v")


async def test_cancelling_every_waiter_cancels_the_load_and_caches_nothing() -> None:
    """When all waiters are cancelled the load is cancelled, not cached, and reloads next time."""
    cache, _ = make_cache()
    gate = Gate()
    waiters = [asyncio.create_task(cache.get_or_load("a", "k", gate)) for _ in range(3)]
    await settle()
    for w in waiters:
        w.cancel()
    await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), timeout=5)
    await settle()
    assert (gate.calls, gate.cancelled) == (1, 1)
    assert cache.get("a", "k") == (False, None)
    assert cache.get_stats()["cache_loads_in_flight"] == 0
    gate.release.set()
    assert await cache.get_or_load("a", "k", gate) == "v"
    assert gate.calls == 2


async def test_waiter_cancelled_before_the_load_starts_leaves_nothing_running() -> None:
    """A load cancelled before its first step is still accounted as finished."""
    cache, _ = make_cache()
    gate = Gate()
    # Drive the coroutine by hand so the waiter is cancelled before the load task ever runs.
    coro = cache.get_or_load("a", "k", gate)
    coro.send(None)
    with pytest.raises(asyncio.CancelledError):
        coro.throw(asyncio.CancelledError())
    await settle()
    assert gate.calls == 0
    assert cache.get_stats()["cache_loads_in_flight"] == 0
    assert cache.get("a", "k") == (False, None)


# -- stale-set protection (guava#1881) ------------------------------------------------------

Write = Callable[[Cache], object]
WRITES: dict[str, Write] = {
    "invalidate": lambda c: c.invalidate("a", "k"),
    "invalidate_tags": lambda c: c.invalidate_tags("owner:A"),
    "clear_ns": lambda c: c.clear("a"),
    "clear_all": lambda c: c.clear(),
    "set": lambda c: c.set("a", "k", "fresh"),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_load_overtaken_by_a_write_is_returned_but_not_stored(write: Write) -> None:
    """A load in flight during a write still answers its caller but does not repopulate."""
    cache, _ = make_cache()
    gate = Gate(value="old")
    waiter = asyncio.create_task(cache.get_or_load("a", "k", gate, tags=["owner:A"]))
    await settle()
    write(cache)
    gate.release.set()
    assert await asyncio.wait_for(waiter, timeout=5) == "old"
    assert cache.get("a", "k")[1] != "old"
    assert cache.get_stats()["cache_stale_discards"] == 1


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_caller_after_a_write_does_not_join_the_older_load(write: Write) -> None:
    """A get_or_load arriving after a write starts its own load instead of joining the stale one."""
    cache, _ = make_cache()
    old, new = Gate(value="old"), Gate(value="new")
    first = asyncio.create_task(cache.get_or_load("a", "k", old, tags=["owner:A"]))
    await settle()
    write(cache)
    cache.invalidate("a", "k")  # drop what `set` stored, so the next call misses
    second = asyncio.create_task(cache.get_or_load("a", "k", new, tags=["owner:A"]))
    await settle()
    new.release.set()
    assert await asyncio.wait_for(second, timeout=5) == "new"
    old.release.set()
    assert await asyncio.wait_for(first, timeout=5) == "old"
    assert (old.calls, new.calls) == (1, 1)
    assert cache.get("a", "k") == (True, "new")


async def test_unrelated_writes_do_not_discard_a_load() -> None:
    """Writes to another key, tag or namespace leave a load free to store its result."""
    cache, _ = make_cache()
    gate = Gate()
    waiter = asyncio.create_task(cache.get_or_load("a", "k", gate, tags=["owner:A"]))
    await settle()
    cache.invalidate("a", "other")
    cache.invalidate_tags("owner:B")
    cache.clear("b")
    gate.release.set()
    await asyncio.wait_for(waiter, timeout=5)
    assert cache.get("a", "k") == (True, "v")


class NaiveCache:
    """Cache-aside without generations: the pattern guava#1881 shows to be wrong."""

    def __init__(self) -> None:
        self.data: dict[Hashable, Any] = {}

    async def get_or_load(
        self, ns: str, key: Hashable, loader: Callable[[], Awaitable[Any]], **_: Any
    ) -> Any:
        if key not in self.data:
            self.data[key] = await loader()
        return self.data[key]

    def invalidate(self, ns: str, key: Hashable) -> None:
        self.data.pop(key, None)

    def invalidate_tags(self, *tags: str) -> None:
        self.data.clear()


async def read_your_writes_race(cache: Any, rng: random.Random, use_tags: bool) -> int:
    """Trino's testInvalidateAndLoadConcurrently: return the number of stale reads seen.

    Each writer multiplies the remote value by its prime, invalidates, then reads through the
    cache; a read not divisible by the writer's prime is older than the writer's own write.
    """
    remote = [1]

    async def yields() -> None:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)

    async def loader() -> int:
        await yields()
        value = remote[0]
        await yields()
        return value

    async def writer(prime: int) -> bool:
        await yields()
        remote[0] *= prime
        await yields()
        if use_tags:
            cache.invalidate_tags("table:deals")
        else:
            cache.invalidate("queries", "k")
        await yields()  # lets an older load finish (and try to store) before this read
        value = await cache.get_or_load("queries", "k", loader, tags=["table:deals"])
        return bool(value % prime)

    async def reader() -> bool:
        await yields()
        await cache.get_or_load("queries", "k", loader, tags=["table:deals"])
        return False

    jobs = [writer(p) for p in (2, 3, 5, 7)] + [reader() for _ in range(3)]
    rng.shuffle(jobs)
    stale = sum(await asyncio.gather(*jobs))
    final = await cache.get_or_load("queries", "k", loader, tags=["table:deals"])
    return stale + int(final != remote[0])


@pytest.mark.parametrize("use_tags", [False, True], ids=["invalidate", "invalidate_tags"])
async def test_reads_after_a_write_never_see_older_values(use_tags: bool) -> None:
    """Over 1000 random interleavings, no reader sees a value older than its own write."""
    stale = 0
    for seed in range(1000):
        cache = Cache(clock=FakeClock())
        stale += await read_your_writes_race(cache, random.Random(seed), use_tags)
    assert stale == 0


async def test_race_harness_catches_the_naive_cache() -> None:
    """The same race harness finds stale reads in naive cache-aside, so it can fail."""
    stale = 0
    for seed in range(200):
        stale += await read_your_writes_race(NaiveCache(), random.Random(seed), False)
    assert stale > 0


async def test_write_stamps_are_kept_only_for_keys_and_tags_being_loaded() -> None:
    """Stamps for stale-set checks exist only for keys and tags a running load depends on."""
    cache, _ = make_cache()
    gate = Gate()
    waiter = asyncio.create_task(cache.get_or_load("a", "k", gate, tags=["t:k"]))
    await settle()
    for i in range(1000):
        cache.invalidate("a", i)
        cache.invalidate_tags(f"t{i}")
    assert (cache._key_stamps, cache._tag_stamps) == ({}, {})
    cache.invalidate("a", "k")
    cache.invalidate_tags("t:k")
    assert (len(cache._key_stamps), len(cache._tag_stamps)) == (1, 1)
    gate.release.set()
    await asyncio.wait_for(waiter, timeout=5)
    await settle()
    assert (cache._key_stamps, cache._tag_stamps) == ({}, {})
    assert (cache._watched_keys, cache._watched_tags) == ({}, {})


# -- query keys -----------------------------------------------------------------------------


def test_query_key_uses_the_full_sql() -> None:
    """Two queries sharing a 150-character prefix get different keys."""
    prefix = "SELECT d.id, d.name, d.value FROM deals d WHERE " + "d.owner_id = $1 AND " * 6
    assert len(prefix) > 150
    assert query_key(prefix + "d.stage_id = $2", [1, 2]) != query_key(prefix + "true", [1, 2])


def test_query_key_collapses_whitespace_outside_quotes_only() -> None:
    """Whitespace runs collapse and ends strip, but quoted text is kept verbatim."""
    assert query_key("  SELECT *\n\tFROM   deals ", []) == query_key("SELECT * FROM deals", [])
    assert query_key("SELECT 'a  b'", []) != query_key("SELECT 'a b'", [])
    assert query_key('SELECT "x  y"', []) != query_key('SELECT "x y"', [])


def test_query_key_distinguishes_parameter_types() -> None:
    """1, 1.0, True and "1" (and list vs tuple) give four different keys."""
    keys = {query_key("SELECT $1", [p]) for p in (1, 1.0, True, "1")}
    assert len(keys) == 4
    assert query_key("SELECT $1", [[1]]) != query_key("SELECT $1", [(1,)])
    assert query_key("SELECT $1, $2", [1, 2]) != query_key("SELECT $1, $2", [2, 1])


def test_query_key_of_a_uuid_is_its_value_and_not_its_number() -> None:
    """A UUID keys by its 128-bit number, still apart from that number as an int or text."""
    deal = uuid.uuid4()
    assert query_key("SELECT $1", [deal]) == query_key("SELECT $1", [uuid.UUID(str(deal))])
    assert query_key("SELECT $1", [deal]) != query_key("SELECT $1", [uuid.uuid4()])
    assert query_key("SELECT $1", [deal]) != query_key("SELECT $1", [deal.int])
    assert query_key("SELECT $1", [deal]) != query_key("SELECT $1", [str(deal)])
    # asyncpg's UUID type (what a row's uuid column holds) keys as the same value.
    from_row = pgproto.UUID(str(deal))
    assert type(from_row) is not uuid.UUID
    assert query_key("SELECT $1", [from_row]) == query_key("SELECT $1", [deal])
    assert query_key("SELECT $1", [[from_row]]) == query_key("SELECT $1", [[deal]])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=8),
            st.decimals(allow_nan=False, allow_infinity=False),
            st.uuids(),
            st.lists(st.one_of(st.integers(), st.uuids(), st.text(max_size=4)), max_size=3),
        ),
        max_size=4,
    )
)
def test_query_key_freezes_each_parameter_as_the_general_rule_does(params: list[Any]) -> None:
    """Each parameter's part of the key is exactly what ``_freeze`` gives it, in order,
    after the normalized SQL."""
    assert query_key("SELECT $1", params) == (
        "sql",
        "SELECT $1",
        tuple(_freeze(p) for p in params),
    )


def test_query_key_freezes_unhashable_params_deterministically() -> None:
    """Lists, dicts and sets become hashable keys that ignore dict and set order."""
    a = query_key("SELECT $1, $2, $3", [[1, [2]], {"x": 1, "y": [2]}, {3, 4}])
    b = query_key("SELECT $1, $2, $3", [[1, [2]], {"y": [2], "x": 1}, {4, 3}])
    assert a == b
    assert hash(a) == hash(b)
    with pytest.raises(TypeError, match="bytearray"):
        query_key("SELECT $1", [bytearray(b"x")])


# -- immutable values, joined loads, memo -------------------------------------------------------


async def test_cached_rows_are_read_only_for_every_caller() -> None:
    """A caller that tries to change a cached row gets TypeError; the cached value (and
    what the next caller sees) is unchanged. A copy is free to change."""
    cache, _ = make_cache()

    async def load() -> list[dict[str, Any]]:
        return [{"id": 1, "name": "Lead"}]

    first = await cache.get_or_load("a", "stages", load)
    with pytest.raises(TypeError, match="read-only"):
        first[0]["name"] = "hacked"
    with pytest.raises(TypeError, match="read-only"):
        first[0].update(name="hacked")
    with pytest.raises((TypeError, AttributeError)):
        first.append({"id": 2})  # type: ignore[attr-defined]
    copy = dict(first[0])
    copy["name"] = "mine"
    again = await cache.get_or_load("a", "stages", load)
    assert again == ({"id": 1, "name": "Lead"},)
    cache.set("a", "k", {"nested": {"x": [1]}})
    hit, value = cache.get("a", "k")
    assert hit and isinstance(value["nested"]["x"], tuple)
    with pytest.raises(TypeError):
        value["nested"]["x"] = 2


async def test_a_caller_joining_a_load_counts_a_joined_load_not_statements() -> None:
    """The request that starts a load owns its statements; one that joins it counts a
    joined load instead (sixty_core.db.recorder)."""
    from sixty_core.db.recorder import count_statements, recording

    cache, _ = make_cache()
    gate = Gate()

    async def load() -> Any:
        count_statements(1)  # what the pool's lease does for the SELECT
        return await gate()

    async def read() -> tuple[int, int]:
        with recording() as tally:
            await cache.get_or_load("a", "k", load)
            return tally.statements, tally.joined_loads

    starter = asyncio.create_task(read())
    await settle()
    joiner = asyncio.create_task(read())
    await settle()
    gate.release.set()
    assert await starter == (1, 0)
    assert await joiner == (0, 1)
    assert cache.get_stats()["namespaces"]["a"]["joins"] == 1


async def test_memo_computes_once_per_ttl_for_concurrent_callers() -> None:
    """Memo: fifty concurrent callers share one computation; after the TTL, one more."""
    from sixty_core.cache import Memo

    clock = FakeClock()
    memo = Memo(ttl_s=1.0, clock=clock)
    gate = Gate(value={"n": 1})
    results = [asyncio.create_task(memo.get(gate)) for _ in range(50)]
    await settle()
    gate.release.set()
    assert all(r == {"n": 1} for r in await asyncio.gather(*results))
    assert (memo.computed, gate.calls) == (1, 1)
    clock.tick(1.0)
    await memo.get(gate)
    assert (memo.computed, gate.calls) == (2, 2)
