"""`sixty probe`: statements and auth lookups per request, read off a live service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sixty_core.db.provision import connect
from sixty_core.errors import SixtyError
from sixty_core.harness.probe import as_rows, probe
from sixty_core.profiles import resolve_profile
from tests.api_support import running_api

ENDPOINTS = {
    "GET /api/stages",
    "GET /api/owners",
    "GET /api/companies",
    "GET /api/deals",
    "GET /api/deals/{id}",
    "GET /api/deals/pipeline-stats",
    "POST /api/deals",
    "PATCH /api/deals/{id}",
    "POST /api/deals/{id}/move",
    "POST /api/deals/bulk",
    "DELETE /api/deals/{id}",
}


@pytest.mark.parametrize("profile", ["legacy", "optimized"])
async def test_probe_counts_every_endpoint_and_leaves_no_deal_behind(
    db_dsn: str, serve: Callable[..., Awaitable[str]], profile: str
) -> None:
    """Every endpoint answers 2xx and is counted; the deals it creates are deleted again."""
    async with running_api(db_dsn, resolve_profile(profile), serve) as api:
        owner = api.user(1)
        conn = await connect(db_dsn)
        try:
            before = await conn.fetchval("SELECT count(*) FROM deals")
            results = await asyncio.to_thread(
                probe, str(api.http.base_url), owner.token, str(owner.id), repeats=3
            )
            after = await conn.fetchval("SELECT count(*) FROM deals")
        finally:
            await conn.close()
    rows = {row["endpoint"]: row for row in as_rows(results)}
    assert set(rows) == ENDPOINTS
    for row in rows.values():
        assert row["requests"] == 3
        assert all(200 <= status < 300 for status in row["statuses"]), row
    # One deal made to write on, which the probe keeps; the created ones are deleted.
    assert after - before == 1
    # Legacy verifies the token twice per request; optimized serves it from the cache.
    expected_lookups = 2.0 if profile == "legacy" else 0.0
    assert {row["steady_auth_lookups"] for row in rows.values()} == {expected_lookups}


@pytest.mark.parametrize(("faults", "stale"), [(frozenset(), False), ({"stale_cache"}, True)])
async def test_probe_reads_every_write_back_and_counts_stale_reads(
    db_dsn: str, serve: Callable[..., Awaitable[str]], faults: frozenset[str], stale: bool
) -> None:
    """Optimized serves reads from its query cache; each write must show on the next read.
    With writes no longer invalidating it (the stale_cache fault), the count says so."""
    async with running_api(
        db_dsn, resolve_profile("optimized"), serve, test_faults=frozenset(faults)
    ) as api:
        owner = api.user(1)
        results = await asyncio.to_thread(
            probe, str(api.http.base_url), owner.token, str(owner.id), repeats=3
        )
    stale_reads = {r.endpoint: r.stale_reads for r in results if r.stale_reads}
    if stale:
        assert set(stale_reads) == {"PATCH /api/deals/{id}", "POST /api/deals/{id}/move"}
    else:
        assert stale_reads == {}


async def test_probe_refuses_a_forged_token(
    db_dsn: str, serve: Callable[..., Awaitable[str]]
) -> None:
    """A token the service does not know is a clear error, not a table of 401s."""
    async with running_api(db_dsn, resolve_profile("optimized"), serve) as api:
        with pytest.raises(SixtyError, match="refused the probe's token"):
            await asyncio.to_thread(probe, str(api.http.base_url), "sixty_forged", "x")


def test_probe_names_an_unreachable_service() -> None:
    """Nothing listening: the error names the URL."""
    with pytest.raises(SixtyError, match=r"cannot reach the service at http://127\.0\.0\.1:9"):
        probe("http://127.0.0.1:9", "t", "x")
