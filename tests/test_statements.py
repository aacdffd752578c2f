"""Statements per request: the X-Sixty-Queries header equals what Postgres itself logged.

The test database gets ``log_statement = 'all'``, so Postgres writes one ``LOG: statement``
or ``LOG: execute`` line per statement message it receives, from any process (the service
and the edge upstream alike). Requests are sent one at a time and each one's lines are the
log's growth across it. A statement the service's counter missed (a forgotten call site, a
second connection) makes the two differ, which the ``uncounted_query`` test fault proves.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from sixty_core.db.provision import Database, connect
from sixty_core.harness.probe import markdown_table, probe
from sixty_core.profiles import resolve_profile
from tests.api_support import Api, running_api

README = Path(__file__).resolve().parent.parent / "README.md"
_STATEMENT_LINE = re.compile(rb"LOG:  (?:statement: |execute )")


@dataclass
class StatementLog:
    """The server log of the session's embedded Postgres, read from a byte offset on."""

    path: Path

    def offset(self) -> int:
        return self.path.stat().st_size

    def count_since(self, offset: int) -> int:
        with self.path.open("rb") as log:
            log.seek(offset)
            return len(_STATEMENT_LINE.findall(log.read()))


@pytest_asyncio.fixture(loop_scope="session")
async def statement_log(pg_server: Database, db_dsn: str) -> AsyncIterator[StatementLog]:
    """Log every statement sent to this test's database (sessions opened from now on)."""
    assert pg_server.data_dir is not None
    name = urlsplit(db_dsn).path.lstrip("/")
    admin = await connect(pg_server.dsn)
    try:
        await admin.execute(f"ALTER DATABASE {name} SET log_statement = 'all'")
    finally:
        await admin.close()
    yield StatementLog(pg_server.data_dir / "log")


Call = Callable[[Api], Awaitable[httpx.Response]]


def requests_for(api: Api, deal_id: str, stages: list[dict[str, Any]]) -> list[tuple[str, Call]]:
    """One request of every endpoint, as a seeded non-admin owner, in probe order."""
    owner = api.user(1)
    created: list[str] = []

    async def create(api: Api) -> httpx.Response:
        body = {"name": "counted", "company": "c", "owner_id": owner.id}
        response = await api.call("POST", "/api/deals", owner, json=body)
        data = response.json()["data"]
        created.append((data.get("data") or data)["id"])
        return response

    return [
        ("GET /api/stages", lambda a: a.call("GET", "/api/stages", owner)),
        ("GET /api/owners", lambda a: a.call("GET", "/api/owners", owner)),
        ("GET /api/companies", lambda a: a.call("GET", "/api/companies", owner)),
        ("GET /api/deals", lambda a: a.call("GET", "/api/deals", owner)),
        ("GET /api/deals/{id}", lambda a: a.call("GET", f"/api/deals/{deal_id}", owner)),
        ("GET pipeline-stats", lambda a: a.call("GET", "/api/deals/pipeline-stats", owner)),
        ("POST /api/deals", create),
        (
            "PATCH /api/deals/{id}",
            lambda a: a.call("PATCH", f"/api/deals/{deal_id}", owner, json={"name": "n"}),
        ),
        (
            "POST move",
            lambda a: a.call(
                "POST", f"/api/deals/{deal_id}/move", owner, json={"stage_id": stages[3]["id"]}
            ),
        ),
        (
            "POST bulk",
            lambda a: a.call(
                "POST",
                "/api/deals/bulk",
                owner,
                json={
                    "operation": "update_stage",
                    "deal_ids": [deal_id],
                    "stage_id": stages[1]["id"],
                },
            ),
        ),
        ("DELETE /api/deals/{id}", lambda a: a.call("DELETE", f"/api/deals/{created[-1]}", owner)),
    ]


async def mismatches(api: Api, log: StatementLog, *, rounds: int = 2) -> list[str]:
    """Send every endpoint's request ``rounds`` times, one at a time; return a line per
    request whose header differs from what Postgres logged for it."""
    owner = api.user(1)
    stages = (await api.call("GET", "/api/stages", owner)).json()["data"]
    deal_id = (await api.own_deal(owner))["id"]
    found = []
    for round_no in range(rounds):
        for name, call in requests_for(api, deal_id, stages):
            before = log.offset()
            response = await call(api)
            assert response.status_code < 300, (name, response.text)
            counted = int(response.headers["x-sixty-queries"])
            logged = log.count_since(before)
            if counted != logged:
                found.append(f"round {round_no} {name}: header {counted}, Postgres {logged}")
    return found


@pytest.mark.parametrize("profile", ["legacy", "optimized", "legacy+pool_tuning"])
async def test_header_equals_what_postgres_logged_for_every_endpoint(
    db_dsn: str,
    statement_log: StatementLog,
    serve: Callable[..., Awaitable[str]],
    profile: str,
) -> None:
    """Cold and warm, every endpoint's X-Sixty-Queries equals the statements Postgres
    logged for that request: BEGIN/COMMIT, the pool's reset and the edge's insert
    included."""
    async with running_api(db_dsn, resolve_profile(profile), serve) as api:
        assert await mismatches(api, statement_log) == []


async def test_a_statement_the_counter_misses_is_caught(
    db_dsn: str, statement_log: StatementLog, serve: Callable[..., Awaitable[str]]
) -> None:
    """The uncounted_query fault sends one statement per request past the counter: the
    comparison must then fail for every authenticated request."""
    async with running_api(
        db_dsn,
        resolve_profile("optimized"),
        serve,
        test_faults=frozenset({"uncounted_query"}),
    ) as api:
        found = await mismatches(api, statement_log, rounds=1)
    assert len(found) == 11, found
    assert all(re.search(r"header (\d+), Postgres (\d+)", f) for f in found)


async def test_extra_query_fault_is_counted(
    db_dsn: str, serve: Callable[..., Awaitable[str]]
) -> None:
    """The extra_query fault adds exactly one counted statement to a request."""
    counts = {}
    for faults in (frozenset(), frozenset({"extra_query"})):
        async with running_api(
            db_dsn, resolve_profile("optimized"), serve, test_faults=faults
        ) as api:
            await api.call("GET", "/api/stages", api.user(1))  # warm the session cache
            response = await api.call("GET", "/api/stages", api.user(1))
            counts[faults] = int(response.headers["x-sixty-queries"])
    assert counts[frozenset({"extra_query"})] == counts[frozenset()] + 1


async def test_concurrent_first_reads_send_one_statement_in_all(
    db_dsn: str, serve: Callable[..., Awaitable[str]]
) -> None:
    """Eight concurrent first reads of one deal share one load: one request counts its
    statement; each other one counts either a joined load or a cache hit, and /metrics
    holds the same joined loads as the headers."""
    async with running_api(db_dsn, resolve_profile("optimized"), serve) as api:
        owner = api.user(1)
        await api.call("GET", "/api/stages", owner)  # cache the session first
        deal = await api.own_deal(owner)
        responses = await asyncio.gather(
            *(api.call("GET", f"/api/deals/{deal['id']}", owner) for _ in range(8))
        )
        metrics = (await api.call("GET", "/metrics")).text
    statements = [int(r.headers["x-sixty-queries"]) for r in responses]
    joined = [int(r.headers["x-sixty-joined-loads"]) for r in responses]
    assert sorted(statements) == [0] * 7 + [1]
    assert all(s + j <= 1 for s, j in zip(statements, joined, strict=True))
    line = 'sixty_cache_joined_loads_total{endpoint="GET /api/deals/{deal_id}"}'
    assert f"{line} {float(sum(joined))}" in metrics


async def test_readme_statements_table_is_what_the_probe_measures(
    db_dsn: str, serve: Callable[..., Awaitable[str]]
) -> None:
    """The README's statements table is `sixty probe --markdown` output, to the digit."""
    results = {}
    for profile in ("legacy", "optimized"):
        async with running_api(db_dsn, resolve_profile(profile), serve) as api:
            owner = api.user(1)
            results[profile] = await asyncio.to_thread(
                probe, str(api.http.base_url), owner.token, owner.id
            )
    readme = README.read_text()
    begin, end = "<!-- statements-table:begin -->\n", "<!-- statements-table:end -->"
    documented = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert documented == markdown_table(results)
