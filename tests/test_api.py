"""API contract, for every profile: envelopes, statuses, validation, owner isolation."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sixty_core.db.provision import connect
from sixty_core.profiles import resolve_profile
from tests.api_support import Api, api_fixture, new_id, running_api

PROFILES = ["legacy", "optimized", "optimized-no-query_cache", "legacy+bounded_lists"]


api = api_fixture("api", PROFILES)
#: The two base profiles only: input validation does not depend on ablations.
base_api = api_fixture("base_api", ["legacy", "optimized"])
optimized_api = api_fixture("optimized_api", ["optimized"])


def created_deal(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    """The deal inside a create answer, in whichever shape the profile answers."""
    if "robust_create" in api.profile.flags:
        assert body["error"] is None
        deal: dict[str, Any] = body["data"]
    else:
        assert body["error"] == "Deal created successfully"  # the original's broken shape
        deal = body["data"]["data"]
    return deal


def forged_cursor(sort: str, value: str) -> str:
    """A well-formed cursor for ``sort`` (descending) whose value was not written by us."""
    raw = json.dumps([sort, "desc", value, "00000000-0000-0000-0000-000000000001"])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def count_deals(dsn: str) -> int:
    conn = await connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM deals"))
    finally:
        await conn.close()


async def test_list_shows_only_the_callers_deals(api: Api) -> None:
    """A non-admin's list holds only their deals; an admin's holds several owners'."""
    owner = api.user(1)
    response = await api.call("GET", "/api/deals", owner)
    assert response.status_code == 200
    body = response.json()
    assert body["error"] is None
    assert body["count"] == len(body["data"]) > 0
    assert {d["owner_id"] for d in body["data"]} == {owner.id}
    admin = (await api.call("GET", "/api/deals?limit=500", api.admin)).json()["data"]
    assert len({d["owner_id"] for d in admin}) > 1
    first = body["data"][0]
    for key in ("id", "name", "company", "value", "stage_name", "stage_color", "days_in_stage"):
        assert key in first
    assert not [key for deal in body["data"] for key in deal if key.startswith("idempotency")]


async def test_other_owners_deal_is_invisible_through_every_endpoint(api: Api) -> None:
    """User B never reads or changes user A's deal: get, patch, move, delete, bulk -> 404."""
    a, b = api.user(1), api.user(2)
    deal = await api.own_deal(a)
    stages = (await api.call("GET", "/api/stages", b)).json()["data"]
    path = f"/api/deals/{deal['id']}"
    attempts = [
        await api.call("GET", path, b),
        await api.call("PATCH", path, b, json={"name": "stolen"}),
        await api.call("POST", f"{path}/move", b, json={"stage_id": stages[-1]["id"]}),
        await api.call("DELETE", path, b),
        await api.call(
            "POST", "/api/deals/bulk", b, json={"operation": "delete", "deal_ids": [deal["id"]]}
        ),
    ]
    for response in attempts:
        assert response.status_code == 404, response.text
        assert response.json()["data"] is None
        assert response.json()["error"]["code"] == "not_found"
    listed = await api.call("GET", f"/api/deals?owner_id={a.id}", b)
    assert listed.status_code == 403
    after = (await api.call("GET", path, a)).json()["data"]
    assert after["name"] == deal["name"] and after["version"] == deal["version"]


async def test_create_answers_in_the_profiles_shape_and_writes_one_row(api: Api) -> None:
    """Create answers 201; optimized with {data: deal, error: null}, legacy with the
    original's double-wrapped body; either way exactly one row is written."""
    owner = api.user(1)
    before = await count_deals(api.dsn)
    response = await api.call(
        "POST",
        "/api/deals",
        owner,
        json={
            "name": "API deal",
            "company": "Acme",
            "owner_id": owner.id,
            "one_off_revenue": 1000,
            "monthly_mrr": 100,
        },
    )
    assert response.status_code == 201, response.text
    assert "x-sixty-degraded" not in response.headers  # the edge upstream served it
    deal = created_deal(api, response.json())
    assert deal["id"]
    assert deal["value"] == 1300  # revenue trigger: one-off + 3 * MRR
    assert await count_deals(api.dsn) == before + 1
    fetched = await api.call("GET", f"/api/deals/{deal['id']}", owner)
    assert fetched.json()["data"]["name"] == "API deal"


async def test_create_validation_names_the_missing_fields(api: Api) -> None:
    """Optimized names every missing required field; legacy refuses a missing name."""
    owner = api.user(1)
    response = await api.call("POST", "/api/deals", owner, json={"description": "x"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    if "robust_create" in api.profile.flags:
        assert message == "missing required fields: name, company, owner_id"
    else:
        assert message == "Deal name is required"


async def test_creating_for_another_owner_is_forbidden(api: Api) -> None:
    """A non-admin cannot create a deal owned by someone else."""
    response = await api.call(
        "POST",
        "/api/deals",
        api.user(1),
        json={"name": "x", "company": "y", "owner_id": api.user(2).id},
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/api/deals", {"content": b"{not json"}, 400),
        ("POST", "/api/deals", {"json": {"name": 5, "company": "c"}}, 400),
        ("POST", "/api/deals", {"json": {"name": "n", "company": "c", "hack": 1}}, 400),
        ("POST", "/api/deals", {"json": {"name": "n" * 5000, "company": "c"}}, 400),
        ("POST", "/api/deals", {"json": {"name": "n", "company": "c", "probability": 101}}, 400),
        ("POST", "/api/deals", {"json": ["not", "an", "object"]}, 400),
        ("POST", "/api/deals", {"content": b""}, 400),
        ("POST", "/api/deals", {"content": b"{" + b" " * 70000 + b"}"}, 400),
        ("GET", "/api/deals?limit=1000000000", {}, 400),
        ("GET", "/api/deals?limit=0", {}, 400),
        ("GET", "/api/deals?offset=-1", {}, 400),
        ("GET", "/api/deals?sort=password", {}, 400),
        ("GET", "/api/deals?sort=name;DROP%20TABLE%20deals", {}, 400),
        ("GET", "/api/deals?status=open", {}, 400),
        ("GET", "/api/deals?stage_id=nope", {}, 400),
        ("GET", "/api/deals?cursor=garbage", {}, 400),
        ("GET", f"/api/deals?cursor={forged_cursor('created_at', 'not-a-date')}", {}, 400),
        ("GET", f"/api/deals?sort=value&cursor={forged_cursor('value', 'NaN')}", {}, 400),
        ("GET", "/api/deals?limit=%EF%BC%95", {}, 400),  # a full-width digit five
        ("GET", "/api/deals?limit=1_0", {}, 400),
        ("GET", "/api/deals/not-a-uuid", {}, 400),
        ("GET", f"/api/deals/{new_id()}", {}, 404),
        ("PATCH", f"/api/deals/{new_id()}", {"json": {"name": "x"}}, 404),
        ("PATCH", f"/api/deals/{new_id()}", {"json": {}}, 400),
        ("PATCH", f"/api/deals/{new_id()}", {"json": {"owner_id": new_id()}}, 400),
        (
            "POST",
            "/api/deals/bulk",
            {"json": {"operation": "explode", "deal_ids": [new_id()]}},
            400,
        ),
        ("POST", "/api/deals/bulk", {"json": {"operation": "delete", "deal_ids": []}}, 400),
        (
            "POST",
            "/api/deals/bulk",
            {"json": {"operation": "update_stage", "deal_ids": [new_id()]}},
            400,
        ),
        ("PUT", "/api/deals", {}, 405),
        ("GET", "/api/nothing-here", {}, 404),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    base_api: Api, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    """Malformed, mistyped, unknown, oversize or out-of-range input -> a 4xx envelope."""
    before = await count_deals(base_api.dsn)
    headers = {"Content-Type": "application/json"} if "content" in kwargs else {}
    response = await base_api.call(method, path, base_api.user(1), headers=headers, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["data"] is None
    assert body["error"]["message"]
    assert "Traceback" not in response.text and "asyncpg" not in response.text
    assert await count_deals(base_api.dsn) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer sixty_forged"},
        {"Authorization": "Bearer " + "x" * 600},
    ],
)
async def test_missing_or_forged_tokens_are_refused(api: Api, headers: dict[str, str]) -> None:
    """No, malformed or unknown bearer token -> 401 with the envelope."""
    response = await api.call("GET", "/api/deals", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_expired_token_is_refused(api: Api) -> None:
    """A session past its expiry no longer authenticates."""
    conn = await connect(api.dsn)
    try:
        await conn.execute(
            "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE user_id = $1",
            api.user(3).id,
        )
    finally:
        await conn.close()
    response = await api.call("GET", "/api/deals", api.user(3))
    assert response.status_code == 401


async def test_logout_revokes_at_once(api: Api) -> None:
    """After logout, the very next request with the same token is refused (0 s staleness)."""
    owner = api.user(4)
    assert (await api.call("GET", "/api/stages", owner)).status_code == 200
    response = await api.call("POST", "/api/auth/logout", owner)
    assert response.status_code == 200
    assert response.json()["data"] == {"revoked": True}
    assert (await api.call("GET", "/api/stages", owner)).status_code == 401


async def test_update_move_and_read_your_writes(api: Api) -> None:
    """After PATCH and move return, GET and the list show the new state; a stale version
    is refused with 409; the move is recorded in the stage history."""
    owner = api.user(1)
    deal = await api.own_deal(owner)
    path = f"/api/deals/{deal['id']}"
    await api.call("GET", path, owner)  # warm any cache
    await api.call("GET", "/api/deals?limit=500", owner)
    patched = await api.call(
        "PATCH", path, owner, json={"name": "renamed", "version": deal["version"]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["version"] == deal["version"] + 1
    assert (await api.call("GET", path, owner)).json()["data"]["name"] == "renamed"
    listed = (await api.call("GET", "/api/deals?limit=500", owner)).json()["data"]
    assert {d["id"]: d["name"] for d in listed}[deal["id"]] == "renamed"
    stale = await api.call("PATCH", path, owner, json={"name": "x", "version": deal["version"]})
    assert stale.status_code == 409
    stages = (await api.call("GET", "/api/stages", owner)).json()["data"]
    target = next(s for s in stages if s["id"] != deal["stage_id"])
    moved = await api.call("POST", f"{path}/move", owner, json={"stage_id": target["id"]})
    assert moved.status_code == 200
    assert (await api.call("GET", path, owner)).json()["data"]["stage_name"] == target["name"]
    conn = await connect(api.dsn)
    try:
        history = await conn.fetch(
            "SELECT stage_id, exited_at FROM deal_stage_history "
            "WHERE deal_id = $1 ORDER BY entered_at",
            deal["id"],
        )
    finally:
        await conn.close()
    assert str(history[-1]["stage_id"]) == target["id"] and history[-1]["exited_at"] is None
    assert all(h["exited_at"] is not None for h in history[:-1])


async def test_delete_then_reads_do_not_see_it(api: Api) -> None:
    """A deleted deal is gone from GET (404) and from the list at once."""
    owner = api.user(2)
    deal = await api.own_deal(owner)
    await api.call("GET", "/api/deals?limit=500", owner)
    response = await api.call("DELETE", f"/api/deals/{deal['id']}", owner)
    assert response.status_code == 200
    assert response.json()["data"] == {"id": deal["id"]}
    assert (await api.call("GET", f"/api/deals/{deal['id']}", owner)).status_code == 404
    listed = (await api.call("GET", "/api/deals?limit=500", owner)).json()["data"]
    assert deal["id"] not in {d["id"] for d in listed}


async def test_bulk_is_all_or_nothing(api: Api) -> None:
    """A bulk stage update over own deals changes all; one foreign id changes none."""
    a, b = api.user(1), api.user(2)
    mine = (await api.call("GET", "/api/deals?limit=3&status=active", a)).json()["data"]
    theirs = await api.own_deal(b)
    stages = (await api.call("GET", "/api/stages", a)).json()["data"]
    target = stages[2]["id"]
    refused = await api.call(
        "POST",
        "/api/deals/bulk",
        a,
        json={
            "operation": "update_stage",
            "deal_ids": [d["id"] for d in mine] + [theirs["id"]],
            "stage_id": target,
        },
    )
    assert refused.status_code == 404
    for deal in mine:
        now = (await api.call("GET", f"/api/deals/{deal['id']}", a)).json()["data"]
        assert now["stage_id"] == deal["stage_id"]
    done = await api.call(
        "POST",
        "/api/deals/bulk",
        a,
        json={"operation": "update_stage", "deal_ids": [d["id"] for d in mine], "stage_id": target},
    )
    assert done.status_code == 200
    assert done.json()["data"]["affected_deals"] == len(mine)
    for deal in mine:
        now = (await api.call("GET", f"/api/deals/{deal['id']}", a)).json()["data"]
        assert now["stage_id"] == target


async def test_pipeline_stats_weight_active_deals_by_stage_probability(api: Api) -> None:
    """The weighted pipeline equals sum(value * stage probability) over active deals."""
    owner = api.user(1)
    stats = (await api.call("GET", "/api/deals/pipeline-stats", owner)).json()["data"]
    conn = await connect(api.dsn)
    try:
        expected = await conn.fetchval(
            "SELECT sum(d.value * s.default_probability / 100.0) FROM deals d "
            "JOIN deal_stages s ON s.id = d.stage_id "
            "WHERE d.status = 'active' AND d.owner_id = $1",
            owner.id,
        )
        total = await conn.fetchval("SELECT count(*) FROM deals WHERE owner_id = $1", owner.id)
    finally:
        await conn.close()
    assert stats["overall"]["weighted_pipeline_value"] == pytest.approx(float(expected))
    assert stats["overall"]["total_deals"] == total
    assert [s["stage_name"] for s in stats["stages"]] == [
        "SQL",
        "Opportunity",
        "Verbal",
        "Signed",
        "Lost",
    ]
    other = await api.call("GET", f"/api/deals/pipeline-stats?owner_id={api.user(2).id}", owner)
    assert other.status_code == 403


async def test_static_endpoints(api: Api) -> None:
    """Stages, owners and companies answer in the envelope with counts."""
    owner = api.user(1)
    stages = (await api.call("GET", "/api/stages", owner)).json()
    assert stages["count"] == 5
    owners = (await api.call("GET", "/api/owners", owner)).json()
    assert owners["count"] == len(api.owners)
    assert all(o["full_name"] for o in owners["data"])
    companies = (await api.call("GET", "/api/companies?limit=3", owner)).json()
    assert companies["count"] == 3


async def test_plain_health_is_open_cheap_and_reveals_no_versions(api: Api) -> None:
    """Anyone may ask /api/health: status and response time, one statement, and no
    database or Python version, pool size or row count."""
    response = await api.call("GET", "/api/health")
    assert response.status_code == 200
    health = response.json()["data"]
    assert health["status"] == "healthy" and health["database"]["connected"] is True
    assert set(health["database"]) == {"connected", "response_time", "server_time"}
    assert "system" not in health and "cache" not in health and "flags" not in health["api"]
    assert "PostgreSQL" not in response.text and "python" not in response.text.lower()
    # One SELECT now(), plus the legacy pool's reset on release.
    expected = 1 if "pool_tuning" in api.profile.flags else 2
    assert int(response.headers["x-sixty-queries"]) == expected


@pytest.mark.parametrize(
    ("who", "status"), [(None, 401), ("user", 403), ("admin", 200)], ids=["anon", "user", "admin"]
)
async def test_detailed_health_is_for_admins_only(api: Api, who: str | None, status: int) -> None:
    """Versions, pool, cache and row counts need an admin's token: 401 without one, 403 for
    a non-admin; an admin gets the original's detailed shape."""
    owner = {None: None, "user": api.user(1), "admin": api.admin}[who]
    response = await api.call("GET", "/api/health?detailed=true", owner)
    assert response.status_code == status, response.text
    if status != 200:
        assert response.json()["data"] is None
        assert "PostgreSQL" not in response.text
        return
    health = response.json()["data"]
    assert health["database"]["version"].startswith("PostgreSQL")
    assert set(health["database"]["pool"]) >= {
        "total_connections",
        "idle_connections",
        "waiting_requests",
        "max_pool_size",
        "utilization",
    }
    assert health["database"]["tables"]["deals"] > 0
    assert set(health["cache"]) >= {"hit_rate", "total_hits", "total_misses", "entries"}
    assert health["api"]["flags"] == api.profile.as_dict()
    memory = health["system"]["memory"]
    assert 0 < memory["used"] == memory["usage_mb"] < memory["total"]
    assert memory["peak_rss_mb"] >= memory["rss_mb"]


async def test_detailed_health_is_computed_at_most_once_a_second(api: Api) -> None:
    """Forty concurrent admins share the detail: it is computed (row counts scanned) at
    most once per second of the burst, not forty times."""
    await api.call("GET", "/api/stages", api.admin)  # the admin's session, cached or not
    loop = asyncio.get_running_loop()
    started = loop.time()
    responses = await asyncio.gather(
        *(api.call("GET", "/api/health?detailed=true", api.admin) for _ in range(40))
    )
    elapsed_s = loop.time() - started
    assert {r.status_code for r in responses} == {200}
    computations = {r.json()["data"]["detail_computed_at"] for r in responses}
    assert len(computations) <= math.ceil(elapsed_s) + 1, (len(computations), elapsed_s)


def scraped(text: str) -> dict[str, dict[str, float]]:
    """/metrics as {family: {endpoint label: value}} for the per-endpoint counters."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            endpoint = sample.labels.get("endpoint")
            if endpoint is not None and sample.name.endswith("_total"):
                out.setdefault(sample.name, {})[endpoint] = sample.value
    return out


def _gc_collected(text: str) -> float:
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "sixty_gc_collected_objects_total"
    )


async def test_metrics_count_what_the_cycle_collector_freed(optimized_api: Api) -> None:
    """The service is in this process: cycles made here and collected show in /metrics."""
    before = _gc_collected((await optimized_api.call("GET", "/metrics")).text)
    for _ in range(100):
        cycle: list[Any] = []
        cycle.append(cycle)
    del cycle
    assert gc.collect() >= 100
    after = _gc_collected((await optimized_api.call("GET", "/metrics")).text)
    assert after - before >= 100


async def test_metrics_totals_equal_the_headers_sent(api: Api) -> None:
    """Per endpoint, /metrics' statement, auth-lookup and request totals equal the sums of
    the X-Sixty-* headers the service answered with."""
    owner = api.user(1)
    sent: dict[str, list[int]] = {}
    deal = await api.own_deal(owner)
    calls = [
        ("GET /api/stages", "/api/stages"),
        ("GET /api/deals", "/api/deals?limit=3"),
        ("GET /api/deals/{deal_id}", f"/api/deals/{deal['id']}"),
        ("GET /api/deals/{deal_id}", f"/api/deals/{deal['id']}"),
    ]
    before = scraped((await api.call("GET", "/metrics")).text)
    for endpoint, path in calls:
        response = await api.call("GET", path, owner)
        totals = sent.setdefault(endpoint, [0, 0, 0])
        totals[0] += 1
        totals[1] += int(response.headers["x-sixty-queries"])
        totals[2] += int(response.headers["x-sixty-auth-lookups"])
    after = scraped((await api.call("GET", "/metrics")).text)

    def delta(family: str, endpoint: str) -> float:
        return after[family][endpoint] - before.get(family, {}).get(endpoint, 0.0)

    for endpoint, (requests, statements, lookups) in sent.items():
        assert delta("sixty_http_requests_total", endpoint) == requests
        assert delta("sixty_db_queries_total", endpoint) == statements
        assert delta("sixty_auth_lookups_total", endpoint) == lookups
    assert sum(s for _, s, _ in sent.values()) > 0


async def test_openapi_describes_the_api(api: Api) -> None:
    """An OpenAPI 3 document with every route, generated from the schemas."""
    spec = (await api.call("GET", "/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert "/api/deals/{deal_id}/move" in spec["paths"]
    assert "422" in spec["paths"]["/api/deals"]["post"]["responses"]


async def test_no_database_text_reaches_a_client(api: Api) -> None:
    """A write that violates a foreign key answers 400 with our words, not Postgres's."""
    owner = api.user(1)
    deal = await api.own_deal(owner)
    response = await api.call(
        "PATCH", f"/api/deals/{deal['id']}", owner, json={"company_id": new_id()}
    )
    assert response.status_code == 400
    text = response.text.lower()
    assert "violates" not in text and "constraint" not in text and "sql" not in text


async def test_rows_equal_acknowledged_creates(api: Api) -> None:
    """Twenty creates, twenty rows: nothing lost, nothing doubled on the happy path."""
    owner = api.user(1)
    before = await count_deals(api.dsn)
    ok = 0
    for i in range(20):
        response = await api.call(
            "POST",
            "/api/deals",
            owner,
            json={"name": f"d{i}", "company": "c", "owner_id": owner.id},
        )
        ok += response.status_code == 201
    assert ok == 20
    assert await count_deals(api.dsn) == before + ok


async def create_with_key(api: Api, owner: Any, name: str, key: str) -> Any:
    return await api.call(
        "POST",
        "/api/deals",
        owner,
        headers={"Idempotency-Key": key},
        json={"name": name, "company": "c", "owner_id": owner.id},
    )


async def test_idempotency_keys_are_scoped_to_the_caller(optimized_api: Api) -> None:
    """B sending A's Idempotency-Key gets a deal of B's own, never A's; A's repeat is A's."""
    api = optimized_api
    a, b = api.user(1), api.user(2)
    first = await create_with_key(api, a, "A secret", "shared-key")
    assert first.status_code == 201, first.text
    theirs = await create_with_key(api, b, "B deal", "shared-key")
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["data"]["owner_id"] == b.id
    assert theirs.json()["data"]["name"] == "B deal"
    assert "A secret" not in theirs.text
    again = await create_with_key(api, a, "A secret", "shared-key")
    assert again.json()["data"]["id"] == first.json()["data"]["id"]


async def test_bad_create_input_is_refused_before_the_edge(optimized_api: Api) -> None:
    """An unknown stage or a blank name is a 400 from the service: the edge is not called,
    so a user's bad input never counts against the upstream's breaker."""
    api = optimized_api
    owner = api.user(1)
    edge_before = (await api.edge_stats())["edge_requests"]
    for body, message in (
        ({"stage_id": new_id()}, "is not a deal stage"),
        ({"name": "   "}, "missing required fields: name"),
        ({"company": "\t"}, "missing required fields: company"),
    ):
        response = await api.call(
            "POST",
            "/api/deals",
            owner,
            json={"name": "n", "company": "c", "owner_id": owner.id, **body},
        )
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]["message"]
    assert (await api.edge_stats())["edge_requests"] == edge_before
    good = await create_with_key(api, owner, "good", new_id())
    assert good.status_code == 201 and "x-sixty-degraded" not in good.headers


async def test_the_feed_carries_only_the_callers_deals(base_api: Api) -> None:
    """B's stream skips A's change and delivers B's own, made after it: B's first event
    is B's deal (NOTIFY keeps commit order, so a leak would arrive first)."""
    api = base_api
    a, b = api.user(1), api.user(2)
    a_deal, b_deal = await api.own_deal(a), await api.own_deal(b)
    async with api.http.stream("GET", "/api/deals/stream", headers=api.auth(b)) as stream:
        lines = stream.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        for owner, deal in ((a, a_deal), (b, b_deal)):
            response = await api.call(
                "PATCH", f"/api/deals/{deal['id']}", owner, json={"name": "x"}
            )
            assert response.status_code == 200
        async with asyncio.timeout(10):
            first = await anext(line async for line in lines if line.startswith("data:"))
    event = json.loads(first.removeprefix("data:"))
    assert event["id"] == b_deal["id"]
    assert a_deal["id"] not in first


async def lock_waiter(conn: Any) -> int:
    """The pid of a backend of this database waiting on a lock (polled: it is another
    process; the caller bounds the wait)."""
    while True:
        pid: int | None = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND pid <> pg_backend_pid()"
        )
        if pid is not None:
            return pid
        await asyncio.sleep(0.02)


async def blocked_patch(api: Api, blocker: Any, end_wait: str | None) -> Any:
    """PATCH a deal whose row ``blocker`` holds locked; once the service's statement waits
    on the lock, run ``end_wait`` (SQL taking the waiting backend's pid as $1). Without
    ``end_wait``, the wait must end by itself (within 10 s)."""
    owner = api.user(1)
    deal = await api.own_deal(owner)
    async with blocker.transaction():
        await blocker.execute("SELECT 1 FROM deals WHERE id = $1 FOR UPDATE", uuid.UUID(deal["id"]))
        patch = asyncio.create_task(
            api.call("PATCH", f"/api/deals/{deal['id']}", owner, json={"name": "blocked"})
        )
        async with asyncio.timeout(10):
            if end_wait is not None:
                await blocker.execute(end_wait, await lock_waiter(blocker))
            response = await patch
    after = await api.call("GET", f"/api/deals/{deal['id']}", owner)
    assert after.json()["data"]["name"] == deal["name"]  # nothing was written
    return response


async def test_a_cancelled_statement_is_a_503_with_retry_after(optimized_api: Api) -> None:
    """A statement cancelled by the server (as statement_timeout does) answers 503 with
    Retry-After, not a 500, and writes nothing."""
    blocker = await connect(optimized_api.dsn)
    try:
        response = await blocked_patch(optimized_api, blocker, "SELECT pg_cancel_backend($1)")
    finally:
        await blocker.close()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert int(response.headers["retry-after"]) >= 1


async def test_a_lock_timeout_is_a_409_to_retry(
    db_dsn: str, serve: Callable[..., Awaitable[str]]
) -> None:
    """A write that gives up waiting for a row lock answers 409 (send it again), not 500."""
    blocker = await connect(db_dsn)
    try:
        database = await blocker.fetchval("SELECT current_database()")
        # A session default for the service's connections, which open after this.
        await blocker.execute(f"ALTER DATABASE \"{database}\" SET lock_timeout = '200ms'")
        async with running_api(db_dsn, resolve_profile("optimized"), serve) as api:
            response = await blocked_patch(api, blocker, None)
    finally:
        await blocker.close()
    assert response.status_code == 409, response.text
    assert "changed concurrently" in response.json()["error"]["message"]


async def test_a_replayed_idempotency_key_answers_the_first_deal_and_says_so(
    optimized_api: Api,
) -> None:
    """The same key and body again: the first deal, Idempotent-Replayed: true, no new row
    and no edge call."""
    api = optimized_api
    owner = api.user(1)
    first = await create_with_key(api, owner, "once", "replay-key")
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    rows = await count_deals(api.dsn)
    edge_calls = (await api.edge_stats())["edge_requests"]
    again = await create_with_key(api, owner, "once", "replay-key")
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["data"] == first.json()["data"]
    assert await count_deals(api.dsn) == rows
    assert (await api.edge_stats())["edge_requests"] == edge_calls


async def test_an_idempotency_key_reused_with_another_body_is_a_422(optimized_api: Api) -> None:
    """The same key with a different body is refused with a clear 422, not answered with
    the first deal; nothing is written."""
    api = optimized_api
    owner = api.user(1)
    assert (await create_with_key(api, owner, "original", "reused-key")).status_code == 201
    rows = await count_deals(api.dsn)
    response = await create_with_key(api, owner, "something else", "reused-key")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert "different request body" in error["message"]
    assert await count_deals(api.dsn) == rows
