"""Profiles and flags: each flag changes something observable and counted.

Counts, not timings: statements per request (X-Sixty-Queries, counted on the connection:
in legacy every pooled statement is followed by the pool's reset on release), auth lookups
per request (X-Sixty-Auth-Lookups), cache hits, pool settings, edge calls, leaked scopes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from sixty_core.db.provision import connect
from sixty_core.errors import ConfigError
from sixty_core.profiles import FLAGS, LEGACY, OPTIMIZED, resolve_profile
from tests.api_support import Api, running_api


def test_named_profiles_and_ablations() -> None:
    """legacy has no flag, optimized has all, ablations switch exactly one."""
    assert LEGACY.flags == frozenset()
    assert OPTIMIZED.flags == frozenset(FLAGS)
    assert resolve_profile("optimized-no-static_cache").flags == OPTIMIZED.flags - {"static_cache"}
    assert resolve_profile("legacy+pool_tuning+session_cache").flags == {
        "pool_tuning",
        "session_cache",
    }


@pytest.mark.parametrize("name", ["fast", "optimized-no-warp", "legacy+", "legacy+nitro"])
def test_unknown_profiles_name_the_valid_forms(name: str) -> None:
    """A bad profile name is refused with the forms and flags spelled out."""
    with pytest.raises(ConfigError, match=r"legacy|flags are"):
        resolve_profile(name)


def queries(response: httpx.Response) -> int:
    return int(response.headers["x-sixty-queries"])


def lookups(response: httpx.Response) -> int:
    return int(response.headers["x-sixty-auth-lookups"])


Start = Callable[[str], AbstractAsyncContextManager[Api]]


@pytest.fixture
def start(db_dsn: str, serve: Callable[..., Awaitable[str]]) -> Start:
    """Run the API in a given profile on this test's database (one at a time)."""

    def run(profile: str) -> AbstractAsyncContextManager[Api]:
        return running_api(db_dsn, resolve_profile(profile), serve)

    return run


async def test_session_cache_removes_auth_lookups(start: Start) -> None:
    """Legacy looks the session up twice on every request; cached sessions once, then 0."""
    async with start("legacy") as api:
        first = await api.call("GET", "/api/stages", api.user(1))
        second = await api.call("GET", "/api/stages", api.user(1))
        assert (lookups(first), lookups(second)) == (2, 2)
    async with start("legacy+session_cache") as api:
        first = await api.call("GET", "/api/stages", api.user(1))
        second = await api.call("GET", "/api/stages", api.user(1))
        assert (lookups(first), lookups(second)) == (1, 0)


async def test_static_cache_serves_stages_without_queries(start: Start) -> None:
    """Stages cost a query and its reset per request in legacy, none once preloaded: the
    cached profile sends only the two auth lookups and their resets."""
    sent = {}
    for profile in ("legacy", "legacy+static_cache"):
        async with start(profile) as api:
            sent[profile] = queries(await api.call("GET", "/api/stages", api.user(1)))
    assert sent == {"legacy": 6, "legacy+static_cache": 4}


async def test_bounded_lists_use_one_query(start: Start) -> None:
    """The legacy list is SELECT * plus stage and company lookups (3 queries, every deal);
    the bounded list is one joined query returning at most `limit` rows. Each query is
    followed by the legacy pool's reset, beside the 2 auth lookups and theirs."""
    async with start("legacy") as api:
        response = await api.call("GET", "/api/deals?limit=5", api.user(1))
        assert queries(response) == 2 * 2 + 3 * 2
        assert response.json()["count"] > 5  # the legacy list ignores limit
    async with start("legacy+bounded_lists") as api:
        response = await api.call("GET", "/api/deals?limit=5", api.user(1))
        assert queries(response) == 2 * 2 + 1 * 2
        assert response.json()["count"] == 5


async def test_query_cache_serves_repeated_reads(start: Start) -> None:
    """With the query cache a repeated GET costs no query; without it, one each time; a
    write in between makes the next read reach Postgres again (read-your-writes)."""
    async with start("optimized") as api:
        owner = api.user(1)
        deal = await api.own_deal(owner)
        path = f"/api/deals/{deal['id']}"
        counts = [queries(await api.call("GET", path, owner)) for _ in range(3)]
        assert counts == [1, 0, 0]
        await api.call("PATCH", path, owner, json={"name": "fresh"})
        after = await api.call("GET", path, owner)
        assert queries(after) == 1 and after.json()["data"]["name"] == "fresh"
    async with start("optimized-no-query_cache") as api:
        owner = api.user(1)
        deal = await api.own_deal(owner)
        counts = [
            queries(await api.call("GET", f"/api/deals/{deal['id']}", owner)) for _ in range(3)
        ]
        assert counts == [1, 1, 1]


async def test_pool_tuning_changes_the_pool(start: Start) -> None:
    """Legacy pools up to 20 connections (min 2) and resets each on release; tuned pools
    up to 15 (min 3) with no reset round trip."""
    seen = {}
    for profile in ("legacy", "legacy+pool_tuning"):
        async with start(profile) as api:
            detail = await api.call("GET", "/api/health?detailed=true", api.admin)
            pool = detail.json()["data"]["database"]["pool"]
            stages = await api.call("GET", "/api/stages", api.user(1))
            seen[profile] = (pool["max_pool_size"], pool["min_pool_size"], queries(stages))
    # 3 statements (2 auth lookups + stages), each followed by a reset in legacy only.
    assert seen == {"legacy": (20, 2, 6), "legacy+pool_tuning": (15, 3, 3)}


async def test_edge_failures_fall_back_to_one_insert(start: Start) -> None:
    """With the edge failing every call: legacy makes the original's 2 attempts (mutation
    policy, maxRetries 1) then a fallback insert; robust create makes 2 under its deadline,
    marks the answer degraded, and writes exactly one row."""
    for profile, attempts in (("legacy", 2), ("legacy+robust_create", 2)):
        async with start(profile) as api:
            await api.set_edge_faults(failure_rate=1.0)
            owner = api.user(1)
            before = (await api.edge_stats())["edge_requests"]
            response = await api.call(
                "POST",
                "/api/deals",
                owner,
                json={"name": f"down {profile}", "company": "edge", "owner_id": owner.id},
            )
            assert response.status_code == 201, response.text
            assert response.headers["x-sixty-degraded"] == "edge-fallback"
            assert (await api.edge_stats())["edge_requests"] - before == attempts
            listed = await api.call(
                "GET", "/api/deals", owner, params={"limit": 500, "search": profile}
            )
            assert [d["name"] for d in listed.json()["data"]] == [f"down {profile}"]


async def test_breaker_stops_calling_a_dead_edge(start: Start) -> None:
    """After the breaker opens, creates skip the edge entirely and still succeed."""
    async with start("optimized") as api:
        await api.set_edge_faults(failure_rate=1.0)
        owner = api.user(1)
        for i in range(6):
            response = await api.call(
                "POST",
                "/api/deals",
                owner,
                json={"name": f"b{i}", "company": "c", "owner_id": owner.id},
            )
            assert response.status_code == 201
        before = (await api.edge_stats())["edge_requests"]
        response = await api.call(
            "POST",
            "/api/deals",
            owner,
            json={"name": "after-open", "company": "c", "owner_id": owner.id},
        )
        assert response.status_code == 201
        assert (await api.edge_stats())["edge_requests"] == before


async def _stream_once(api: Api) -> None:
    """Open the SSE feed, see one event for our own change, disconnect."""
    owner = api.user(1)
    deal = await api.own_deal(owner)
    async with api.http.stream("GET", "/api/deals/stream", headers=api.auth(owner)) as stream:
        lines = stream.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        await api.call("PATCH", f"/api/deals/{deal['id']}", owner, json={"name": "live"})
        async with asyncio.timeout(10):
            async for line in lines:
                if line.startswith("data:"):
                    assert deal["id"] in line
                    break


async def metric(api: Api, name: str) -> float:
    text = (await api.call("GET", "/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.parametrize(
    ("profile", "faults", "leaked"),
    [
        ("legacy", frozenset(), 0),
        ("optimized", frozenset(), 0),
        ("legacy", frozenset({"feed_listener_leak"}), 1),
        ("optimized", frozenset({"feed_listener_leak"}), 1),
    ],
)
async def test_feed_listeners_are_released_unless_the_leak_fault_is_on(
    db_dsn: str,
    serve: Callable[..., Awaitable[str]],
    profile: str,
    faults: frozenset[str],
    leaked: int,
) -> None:
    """A disconnected feed client's listener is removed in every profile, as the
    original's realtime channels were; only the feed_listener_leak test fault leaks it."""
    async with running_api(db_dsn, resolve_profile(profile), serve, test_faults=faults) as api:
        await _stream_once(api)
        async with asyncio.timeout(10):
            # The server notices the disconnect asynchronously: poll, bounded.
            while await metric(api, "sixty_streams_open") != 0:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert await metric(api, "sixty_feed_listeners") == leaked
        leaking = await metric(api, 'sixty_component_scopes_leaking{component="feed_client"}')
        assert leaking == 0  # the fault's listener is registered past the scope


async def test_read_your_writes_after_every_write_kind(start: Start) -> None:
    """With every cache on, a list read after each kind of write (create, update, move,
    bulk, delete) reflects that write at once."""
    async with start("optimized") as api:
        owner = api.user(1)

        async def listed() -> dict[str, dict[str, object]]:
            response = await api.call("GET", "/api/deals", owner, params={"limit": 500})
            return {d["id"]: d for d in response.json()["data"]}

        stages = (await api.call("GET", "/api/stages", owner)).json()["data"]
        await listed()  # warm the query cache
        created = await api.call(
            "POST",
            "/api/deals",
            owner,
            json={"name": "ryw", "company": "c", "owner_id": owner.id},
        )
        deal_id = created.json()["data"]["id"]
        assert deal_id in await listed()
        await api.call("PATCH", f"/api/deals/{deal_id}", owner, json={"name": "ryw2"})
        assert (await listed())[deal_id]["name"] == "ryw2"
        await api.call(
            "POST", f"/api/deals/{deal_id}/move", owner, json={"stage_id": stages[3]["id"]}
        )
        assert (await listed())[deal_id]["stage_id"] == stages[3]["id"]
        await api.call(
            "POST",
            "/api/deals/bulk",
            owner,
            json={"operation": "update_stage", "deal_ids": [deal_id], "stage_id": stages[1]["id"]},
        )
        assert (await listed())[deal_id]["stage_id"] == stages[1]["id"]
        stats = await api.call("GET", "/api/deals/pipeline-stats", owner)
        await api.call("DELETE", f"/api/deals/{deal_id}", owner)
        assert deal_id not in await listed()
        after = await api.call("GET", "/api/deals/pipeline-stats", owner)
        assert (
            after.json()["data"]["overall"]["total_deals"]
            == stats.json()["data"]["overall"]["total_deals"] - 1
        )


async def test_slow_edge_never_duplicates_a_create(
    db_dsn: str, serve: Callable[..., Awaitable[str]]
) -> None:
    """The edge answers after the client's deadline but still writes: the fallback insert
    and the edge's late write share one idempotency key, so rows == acknowledged creates."""
    async with running_api(db_dsn, OPTIMIZED, serve, edge_deadline_s=0.2) as api:
        await api.set_edge_faults(latency_ms_median=500.0)
        owner = api.user(1)
        before = await deal_count(api)
        responses = await asyncio.gather(
            *(
                api.call(
                    "POST",
                    "/api/deals",
                    owner,
                    json={"name": f"slow{i}", "company": "c", "owner_id": owner.id},
                )
                for i in range(8)
            )
        )
        assert all(r.status_code == 201 for r in responses)
        assert all(r.headers.get("x-sixty-degraded") == "edge-fallback" for r in responses)
        # 30 s, not 10: once in CI on a slow day a stats request's loopback connect was still
        # pending when a 10 s bound ran out (the eight late writes share this loop).
        async with asyncio.timeout(30):
            # The late writes land too; they happen in another server, so poll (bounded).
            while (await api.edge_stats())["edge_writes"] < 8:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert await deal_count(api) == before + 8


async def deal_count(api: Api) -> int:
    conn = await connect(api.dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM deals"))
    finally:
        await conn.close()


async def test_logout_releases_the_session_monitor_only_with_tracking(start: Start) -> None:
    """Each session's performance monitor (a repeating timer and five interaction
    listeners, ORIGINAL_SYSTEM.md §2.1) is released at logout with resource tracking;
    legacy keeps them and reports the component as leaking."""
    for profile, leaked, index in (("optimized", False, 2), ("legacy", True, 3)):
        async with start(profile) as api:
            owner = api.user(index)
            assert (await api.call("GET", "/api/stages", owner)).status_code == 200
            family = 'sixty_component_{}{{component="session_monitor"}}'
            timers = await metric(api, family.format("timers_active"))
            listeners = await metric(api, family.format("listeners_active"))
            assert (timers, listeners) == (1, 5)
            await api.call("POST", "/api/auth/logout", owner)
            after = (
                await metric(api, family.format("timers_active")),
                await metric(api, family.format("listeners_active")),
            )
            assert after == ((1, 5) if leaked else (0, 0))
            assert (await metric(api, family.format("scopes_leaking")) == 1) == leaked


@pytest.mark.parametrize(("profile", "expected"), [("optimized", 2), ("legacy", 4)])
async def test_session_monitors_are_capped_only_with_tracking(
    db_dsn: str, serve: Callable[..., Awaitable[str]], profile: str, expected: int
) -> None:
    """Sessions that never log out: tracking keeps the newest max_monitored_sessions
    monitors and releases the rest; legacy keeps one timer per session ever seen."""
    async with running_api(
        db_dsn, resolve_profile(profile), serve, max_monitored_sessions=2
    ) as api:
        for index in range(1, 5):
            assert (await api.call("GET", "/api/stages", api.user(index))).status_code == 200
        assert await metric(api, "sixty_session_monitors_active") == expected
        assert await metric(api, "sixty_memory_timers_active") == expected
