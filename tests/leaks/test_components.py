"""Each component's looped lifecycle leaks nothing in the optimized profile, checked by
pytest-memray's ``limit_leaks`` (at most 8 KB may stay allocated per allocation site after
the loop: less than one iteration's worth of any of these leaks times 100).

The component lives in a fixture, as it lives for the app's lifetime: what the loop leaves
allocated is what the component kept. Each test runs its own event loop (``asyncio.run``)
inside the tracked call, then collects cyclic garbage (a closed loop and its cancelled
timer handles are a cycle): a leak is what is still reachable, not what the collector has
not visited yet."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Iterator

import pytest

from sixty_core.cache import Cache, NamespaceConfig
from sixty_core.feed import DealFeed
from sixty_core.memory import ListenerRegistry, MemoryManager
from sixty_core.monitor import OPTIMIZED_MONITORING, PerformanceMonitor
from sixty_core.request_log import BoundedRequestLog
from tests.leaks.filters import not_an_interpreter_cache

ITERATIONS = 200
LIMIT = "8 KB"
PAYLOAD = b"x" * 2048


def noop(*_: object) -> None:
    return None


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(tracking=True, peak_reader=None)


@pytest.mark.limit_leaks(LIMIT, filter_fn=not_an_interpreter_cache)
def test_a_scope_releases_its_timers_listeners_tasks_and_objects(manager: MemoryManager) -> None:
    registry = ListenerRegistry()

    async def lifecycle() -> None:
        for _ in range(ITERATIONS):
            scope = manager.open_scope("component")
            scope.call_every(60, noop)
            scope.call_later(60, noop)
            scope.add_listener(registry, noop)
            scope.create_task(asyncio.sleep(60))
            scope.retain(bytearray(1024))
            await scope.close()

    asyncio.run(lifecycle())
    gc.collect()
    assert len(registry) == 0 and manager.get_stats()["scopes_leaking"] == 0


@pytest.fixture
def monitor(manager: MemoryManager) -> PerformanceMonitor:
    return PerformanceMonitor(manager, 10.0, OPTIMIZED_MONITORING, max_sessions=1024)


@pytest.mark.limit_leaks(LIMIT, filter_fn=not_an_interpreter_cache)
def test_session_monitors_come_and_go(monitor: PerformanceMonitor) -> None:
    async def sessions() -> None:
        for i in range(ITERATIONS):
            token = f"{i:064x}"
            await monitor.on_request(token)
            await monitor.on_request(token)
            await monitor.on_logout(token)

    asyncio.run(sessions())
    gc.collect()
    assert monitor.active == 0


@pytest.fixture
def feed() -> Iterator[DealFeed]:
    # Subscriptions need no connection; the feed's LISTEN is not under test here.
    yield DealFeed("postgresql://127.0.0.1:1/unused")


@pytest.mark.limit_leaks(LIMIT, filter_fn=not_an_interpreter_cache)
def test_feed_subscriptions_are_released(feed: DealFeed, manager: MemoryManager) -> None:
    async def viewers() -> None:
        for _ in range(ITERATIONS):
            scope = manager.open_scope("feed_client")
            subscription = feed.subscribe(uuid.uuid4(), scope=scope)
            feed.registry.notify({"owner_id": "someone else"})
            feed.unsubscribe(subscription, scope=scope)
            await scope.close()

    asyncio.run(viewers())
    gc.collect()
    assert feed.get_stats()["feed_listeners"] == 0


@pytest.fixture
def request_log() -> BoundedRequestLog:
    log = BoundedRequestLog(maxlen=10)
    for _ in range(10):  # full before the test: the loop only replaces entries
        log.record("GET", "/api/deals", 200, 1.0, PAYLOAD)
    return log


@pytest.mark.limit_leaks(LIMIT, filter_fn=not_an_interpreter_cache)
def test_the_request_log_keeps_summaries_not_payloads(request_log: BoundedRequestLog) -> None:
    for i in range(ITERATIONS):
        request_log.record("POST", "/api/deals", 201, float(i), PAYLOAD)
    assert len(request_log) == 10


@pytest.fixture
def cache() -> Cache:
    # A small namespace so the loop evicts: bounded means what leaves is freed.
    return Cache([NamespaceConfig("queries", maxsize=8, ttl_s=300.0)])


@pytest.mark.limit_leaks(LIMIT, filter_fn=not_an_interpreter_cache)
def test_the_query_cache_stays_within_its_bound(cache: Cache) -> None:
    async def loads() -> None:
        for i in range(ITERATIONS):
            key = ("SELECT * FROM deals WHERE owner_id = $1", str(uuid.uuid4()))

            async def load(n: int = i) -> list[dict[str, object]]:
                return [{"id": n, "name": "deal"}]

            # Every load has a tag of its own: neither entries nor tag bookkeeping may pile up.
            await cache.get_or_load("queries", key, load, tags=(f"owner:{i}",))
            if i % 10 == 0:
                cache.invalidate_tags(f"owner:{i}")

    asyncio.run(loads())
    gc.collect()
    assert cache.get_stats()["cache_entries"] <= 8
