"""The optimized hot path keeps the API's behaviour: the indexed router picks the route
Starlette would, the service's one error layer answers exactly as Starlette's three,
remembered encodings and pages are byte-identical to fresh ones, a lease's statements are
counted when it ends, and `sixty ceiling` runs wrk."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Mount, Route

from sixty_core.accounting import RequestAccounting
from sixty_core.api.app import ServiceStarlette
from sixty_core.api.errors import handle_http_exception, handle_sixty_error
from sixty_core.api.params import (
    _remembered_list_query,
    _uuid_of,
    list_query_from,
    parse_uuid,
    require_uuid,
)
from sixty_core.api.responses import JSONResponse, encode, encoded_once, ok
from sixty_core.api.routes import authorization
from sixty_core.api.routing import (
    IndexedRouter,
    LeanRoute,
    OneParameter,
    depth_index,
    static_index,
)
from sixty_core.benchkit.asgi import AsgiCaller
from sixty_core.cache import FrozenRow, FrozenRows, derived, freeze
from sixty_core.db.pool import OPTIMIZED_POOL, Pool
from sixty_core.db.recorder import (
    count_auth_lookup,
    count_joined_load,
    count_statements,
    recording,
)
from sixty_core.errors import NotFoundError, SixtyError, ValidationError
from sixty_core.harness.ceiling import Result, summary, verdict
from sixty_core.memory import MemoryManager
from sixty_core.profiles import resolve_profile
from tests.api_support import running_api
from tests.test_cli import run_sixty


def _endpoint(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(f"{name} {request.path_params}")

    return endpoint


ROUTES = [
    Route("/deals", _endpoint("list"), methods=["GET"]),
    Route("/deals", _endpoint("create"), methods=["POST"]),
    Route("/deals/{deal_id}", _endpoint("one"), methods=["GET"]),
    Route("/deals/stats", _endpoint("stats"), methods=["GET"]),  # shadowed by {deal_id}
    Route("/deals/{deal_id}", _endpoint("update"), methods=["PATCH"]),
    Route("/deals/{deal_id}/move", _endpoint("move"), methods=["POST"]),
    Route("/stages", _endpoint("stages"), methods=["GET"]),
    Route("/owners/{owner_id:int}/deals", _endpoint("owned"), methods=["GET"]),
]


def test_static_index_leaves_out_paths_an_earlier_route_matches() -> None:
    index = static_index(ROUTES)
    assert sorted(index) == ["/deals", "/stages"]
    assert [r.methods for r in index["/deals"]] == [{"GET", "HEAD"}, {"POST"}]


def test_depth_index_groups_routes_by_slashes_in_order() -> None:
    index = depth_index(ROUTES)
    assert index is not None
    assert [(prefix, route.name) for prefix, route in index[2]] == [
        ("/deals/", "endpoint"),
        ("/deals/stats", "endpoint"),
        ("/deals/", "endpoint"),
    ]
    assert [prefix for prefix, _ in index[3]] == ["/deals/", "/owners/"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/stages"), ("POST", "/deals")])
def test_a_static_hit_leaves_the_scope_route_matches_would(method: str, path: str) -> None:
    """The static index skips Route.matches: the scope must come out the same anyway."""
    router = IndexedRouter(ROUTES)
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": ""}
    route = router._full_match(scope)
    assert route is not None
    expected: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": ""}
    match, child_scope = route.matches(expected)
    expected.update(child_scope)
    assert match is Match.FULL
    assert scope == expected


def test_depth_index_is_off_when_a_route_can_match_across_slashes() -> None:
    """A ``path`` convertor or a mount can match any depth: no index, Starlette's scan."""
    assert depth_index([*ROUTES, Route("/files/{rest:path}", _endpoint("file"))]) is None
    assert depth_index([Mount("/sub", routes=ROUTES), *ROUTES]) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/deals"),
        ("POST", "/deals"),
        ("DELETE", "/deals"),  # 405 from Starlette's own scan
        ("HEAD", "/stages"),
        ("GET", "/deals/stats"),  # Starlette picks {deal_id}: so must we
        ("GET", "/deals/42"),
        ("PATCH", "/deals/42"),  # a later route of the same path
        ("DELETE", "/deals/42"),  # 405 with both methods allowed
        ("POST", "/deals/42/move"),
        ("GET", "/deals/42/move"),  # 405
        ("GET", "/deals/42/"),  # the trailing-slash redirect, with a parameter
        ("GET", "/owners/7/deals"),
        ("GET", "/owners/seven/deals"),  # int convertor refuses: 404
        ("GET", "/stages/"),  # the trailing-slash redirect
        ("GET", "/nowhere"),
        ("GET", "/deals/42/move/x"),
    ],
)
def test_indexed_router_answers_exactly_as_starlette(method: str, path: str) -> None:
    plain = Starlette(routes=ROUTES)
    indexed = Starlette(routes=ROUTES)
    indexed.router = IndexedRouter(ROUTES)
    loop = asyncio.new_event_loop()
    try:
        a = loop.run_until_complete(AsgiCaller(plain)(method, path))
        b = loop.run_until_complete(AsgiCaller(indexed)(method, path))
    finally:
        loop.close()
    assert (a.status, a.headers, a.body) == (b.status, b.headers, b.body)


#: Routes for the sliced match: a trailing parameter, one mid-path, one inside a segment,
#: an explicit ``:str``, and neighbours it must not shadow.
SLICED_ROUTES = [
    *ROUTES,
    Route("/files/{name}.json", _endpoint("file"), methods=["GET"]),
    Route("/files/{name:str}", _endpoint("any file"), methods=["GET"]),
    Route("/files/{name}/raw", _endpoint("raw"), methods=["GET"]),
]
_SEGMENTS = ["deals", "42", "stats", "move", "files", "a.json", ".json", "raw", "", "x\n", "\n"]


def _starlette_pick(routes: list[Route], scope: dict[str, Any]) -> tuple[Route, dict[str, Any]]:
    """The first route Starlette's scan matches fully, and the child scope it gives."""
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.FULL:
            return route, child_scope
    raise LookupError(scope["path"])


@given(
    segments=st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=4),
    newline=st.booleans(),
    method=st.sampled_from(["GET", "HEAD", "POST", "PATCH", "DELETE"]),
)
# Where slicing and the expression differ (a final newline), always tried.
@example(segments=["files", "a.json"], newline=True, method="GET")
@example(segments=["deals", "42", "move"], newline=True, method="POST")
def test_a_sliced_match_is_the_route_and_scope_starlette_picks(
    segments: list[str], newline: bool, method: str
) -> None:
    """Whenever the router's index answers, it answers as Starlette's scan does; a path it
    cannot decide goes to that scan."""
    path = "/" + "/".join(segments) + ("\n" if newline else "")
    router = IndexedRouter(SLICED_ROUTES)
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": ""}
    route = router._full_match(scope)
    if route is None:
        return
    expected: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": ""}
    starlette_route, child_scope = _starlette_pick(SLICED_ROUTES, expected)
    expected.update(child_scope)
    assert route is starlette_route
    assert scope == expected


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/deals/42", {"deal_id": "42"}),
        ("PATCH", "/deals/42", {"deal_id": "42"}),
        ("POST", "/deals/42/move", {"deal_id": "42"}),
        ("GET", "/files/a.json", {"name": "a"}),
        ("GET", "/files/.json", {"name": ".json"}),  # too short for {name}.json
        ("GET", "/files/a/raw", {"name": "a"}),
    ],
)
def test_one_parameter_routes_are_matched_by_slicing(
    method: str, path: str, params: dict[str, str]
) -> None:
    """The common paths are decided by the slice (never by a route's expression)."""
    router = IndexedRouter(SLICED_ROUTES)
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": ""}
    with _expressions_refused(router):
        route = router._full_match(scope)
    assert route is not None
    assert scope["path_params"] == params


def test_a_final_newline_is_left_to_the_expression() -> None:
    router = IndexedRouter(SLICED_ROUTES)
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/deals/42\n"}
    with _expressions_refused(router), pytest.raises(AssertionError, match="expression"):
        router._full_match(scope)


@contextmanager
def _expressions_refused(router: IndexedRouter) -> Iterator[None]:
    """Within the block, a route's regular expression fails the test if it is tried."""

    def refuse(scope: Any) -> Any:
        raise AssertionError(f"a route's expression was tried for {scope['path']!r}")

    with pytest.MonkeyPatch.context() as patch:
        for route in router.routes:
            patch.setattr(route, "matches", refuse)
        yield


def test_only_a_single_str_parameter_is_sliced() -> None:
    assert OneParameter.of(Route("/owners/{owner_id:int}/deals", _endpoint("owned"))) is None
    assert OneParameter.of(Route("/a/{x}/{y}", _endpoint("two"))) is None
    assert OneParameter.of(Route("/a/{x}-{y}", _endpoint("two in one"))) is None
    sliced = OneParameter.of(Route("/a/{x:str}/b", _endpoint("one")))
    assert sliced is not None
    assert (sliced.name, sliced.prefix, sliced.suffix) == ("x", "/a/", "/b")
    assert sliced.value("/a/1/b") == "1"
    assert sliced.value("/a//b") is None


async def _raising(request: Request) -> Response:
    raise NotFoundError(f"no deal {request.path_params['deal_id']}")


def _service_app_and_starlette() -> tuple[Any, Any]:
    """The service's app (one boundary, lean routes) and stock Starlette (its own three
    layers, function routes), with the same endpoints and handlers."""
    handlers: dict[Any, Any] = {
        SixtyError: handle_sixty_error,
        HTTPException: handle_http_exception,
    }
    table = [
        ("/deals", _endpoint("list"), ["GET"]),
        ("/deals/{deal_id}", _raising, ["GET"]),
        ("/deals/{deal_id}/move", _endpoint("move"), ["POST"]),
    ]
    lean = [LeanRoute(path, endpoint, methods=methods) for path, endpoint, methods in table]
    stock = [Route(path, endpoint, methods=methods) for path, endpoint, methods in table]
    service = ServiceStarlette(
        lean, memory=MemoryManager(), handlers=handlers, lifespan=_no_lifespan
    )
    return service, Starlette(routes=stock, exception_handlers=handlers)


@asynccontextmanager
async def _no_lifespan(app: Any) -> AsyncIterator[None]:
    yield


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/deals"),
        ("GET", "/deals/42"),  # a domain error, mapped
        ("DELETE", "/deals"),  # Starlette's 405, in the envelope
        ("GET", "/deals/42/move"),
        ("POST", "/deals/42/move"),
        ("GET", "/nowhere"),  # Starlette's 404, in the envelope
        ("GET", "/deals/"),  # redirect
    ],
)
@pytest.mark.parametrize("accounted", [False, True], ids=["alone", "accounted"])
def test_the_service_app_answers_exactly_as_stock_starlette(
    method: str, path: str, accounted: bool
) -> None:
    """Alone, and inside request accounting as the service runs it (its boundary then
    learns from the scope whether a response started)."""
    service, stock = _service_app_and_starlette()
    if accounted:
        service, stock = RequestAccounting(service), RequestAccounting(stock)
    loop = asyncio.new_event_loop()
    try:
        a = loop.run_until_complete(AsgiCaller(stock)(method, path))
        b = loop.run_until_complete(AsgiCaller(service)(method, path))
    finally:
        loop.close()
    assert (a.status, a.headers, a.body) == (b.status, b.headers, b.body)


@pytest.mark.parametrize(
    ("statements", "lookups", "joins"), [(0, 0, 0), (63, 1, 2), (64, 0, 0), (3, 64, 1000)]
)
def test_count_headers_carry_every_count(statements: int, lookups: int, joins: int) -> None:
    """Small counts come from made-once bytes, larger ones are formatted: the same text."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        count_statements(statements)
        for _ in range(lookups):
            count_auth_lookup()
        for _ in range(joins):
            count_joined_load()
        await PlainTextResponse("counted")(scope, receive, send)

    loop = asyncio.new_event_loop()
    try:
        reply = loop.run_until_complete(AsgiCaller(RequestAccounting(app))("GET", "/"))
    finally:
        loop.close()
    assert (
        reply.headers["x-sixty-queries"],
        reply.headers["x-sixty-auth-lookups"],
        reply.headers["x-sixty-joined-loads"],
    ) == (str(statements), str(lookups), str(joins))


def test_derived_values_are_made_once_for_frozen_values_only() -> None:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    frozen = freeze([{"id": 1}])
    assert isinstance(frozen, FrozenRows)
    assert derived(frozen, "k", compute) == derived(frozen, "k", compute) == 1
    assert derived(frozen[0], "k", compute) == 2  # a FrozenRow remembers its own
    plain = [{"id": 1}]
    assert derived(plain, "k", compute) == 3
    assert derived(plain, "k", compute) == 4


async def test_invalidated_cached_answers_are_freed_without_the_cycle_collector(
    db_dsn: str, serve: Callable[..., Awaitable[str]]
) -> None:
    """A cached answer a write invalidates is freed at once, by reference counting.

    A value that reaches itself through what is remembered on it (a whole-result page, a
    summary holding its rows) lives on until a full collection. Under load those piled up
    between collections and the service's RSS crept (issue #9).
    """
    async with running_api(db_dsn, resolve_profile("optimized"), serve) as api:
        owner = api.user(1)
        deal = await api.own_deal(owner)
        reads = [
            "/api/deals?limit=500",  # the whole list: one page, no cursor
            "/api/deals?limit=2",  # a page and a cursor
            "/api/deals/pipeline-stats",
            f"/api/deals/{deal['id']}",
        ]
        gc.collect()
        gc.disable()
        try:
            for path in reads * 2:  # the second round answers from the cache
                assert (await api.call("GET", path, owner)).status_code == 200
            # A write to the owner's deals drops every one of those cached answers.
            patched = await api.call("PATCH", f"/api/deals/{deal['id']}", owner, json={"name": "x"})
            assert patched.status_code == 200, patched.text
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            left = sorted(
                {type(o).__name__ for o in gc.garbage if isinstance(o, FrozenRow | FrozenRows)}
            )
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == []


def test_a_remembered_encoding_is_byte_identical() -> None:
    rows = [{"id": "d1", "value": 1.5, "tags": ["a", "b"], "owner": None}]
    frozen = freeze(rows)
    once = encoded_once(frozen)
    assert isinstance(once, msgspec.Raw)
    assert encoded_once(frozen) is once  # remembered
    assert ok(frozen, count=1).body == ok(rows, count=1).body
    assert encode({"data": once}) == encode({"data": rows})


def test_a_cached_values_envelope_is_made_once_per_set_of_extras() -> None:
    rows = [{"id": "d1", "value": 1.5}]
    frozen = freeze(rows)
    first = ok(frozen, count=1, next_cursor="c1")
    assert first.body == ok(rows, count=1, next_cursor="c1").body
    assert ok(frozen, count=1, next_cursor="c1").body is first.body  # remembered
    other = ok(frozen, count=1, next_cursor=None)
    assert other.body == ok(rows, count=1, next_cursor=None).body != first.body
    # The answer is the object encoding it anew makes (status, headers, every attribute).
    assert vars(first) == vars(
        JSONResponse({"data": rows, "error": None, "count": 1, "next_cursor": "c1"})
    )
    # Another status or headers of the caller's: made as before, never from the memo.
    created = ok(frozen, status=201, headers={"Location": "/x"})
    assert created.status_code == 201 and created.headers["location"] == "/x"
    assert created.body == ok(rows, status=201).body


def test_list_query_memo_keeps_results_not_errors() -> None:
    owner = None
    first = list_query_from(b"limit=7&sort=name", owner)
    assert list_query_from(b"limit=7&sort=name", owner) is first
    for _ in range(2):
        with pytest.raises(ValidationError):
            list_query_from(b"limit=0", owner)
    before = _remembered_list_query.cache_info().currsize
    long = b"search=" + b"x" * 600
    with pytest.raises(ValidationError):  # over MAX_SEARCH: parsed, refused, not kept
        list_query_from(long, owner)
    assert _remembered_list_query.cache_info().currsize == before


def test_uuid_memo_keeps_ids_not_errors() -> None:
    """A parsed id is remembered and equal to a fresh parse; a malformed one is refused
    every time, with the same message, and never remembered."""
    text = "6f1c2a8e-3b7d-4c1a-9e2f-0a1b2c3d4e5f"
    first = require_uuid(text, "deal id")
    assert first == uuid.UUID(text)
    assert require_uuid(text, "deal id") is first
    assert parse_uuid(text.upper(), "owner_id") == first  # every form uuid.UUID takes
    before = _uuid_of.cache_info().currsize
    for _ in range(2):
        with pytest.raises(ValidationError, match="deal id must be a UUID, got 'not-a-uuid'"):
            require_uuid("not-a-uuid", "deal id")
    assert _uuid_of.cache_info().currsize == before


async def test_a_lease_counts_its_statements_when_it_ends(db_dsn: str) -> None:
    """No loop turn is needed to read a tally: the lease counts at its end, in order."""
    async with Pool(db_dsn, OPTIMIZED_POOL, application_name="t_count") as pool:
        with recording() as cached:
            pass
        with recording() as borrowed:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
                await conn.execute("SELECT 2")
                async with conn.transaction():
                    await conn.fetchval("SELECT $1::int", 3)
            counted_at_once = borrowed.statements
        stats = pool.get_stats()
    assert cached.statements == 0
    assert counted_at_once == 5  # SELECT 1, SELECT 2, BEGIN, SELECT $1, COMMIT
    assert stats["statements_sent"] == 5


def need_wrk() -> None:
    if shutil.which("wrk") is not None:
        return
    if os.environ.get("SIXTY_REQUIRE_WRK") == "1":
        pytest.fail("SIXTY_REQUIRE_WRK=1, yet wrk is not installed")
    pytest.skip("wrk is not installed (.ci/run installs it)")


def test_sixty_ceiling_refuses_bad_values_before_starting() -> None:
    result = run_sixty("ceiling", "--duration", "0")
    assert result.returncode == 1
    assert "--duration must be between" in result.stderr


def test_sixty_ceiling_without_wrk_says_how_to_get_it(tmp_path: Any) -> None:
    result = run_sixty("ceiling", env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "wrk is not installed" in result.stderr


@pytest.mark.parametrize(
    ("value", "low", "high", "op", "limit", "expected"),
    [
        # A cost ratio must be at most its limit.
        (1.4, 1.3, 1.5, "<=", 1.6, "met"),
        (1.5, 1.4, 1.6, "<=", 1.6, "met"),  # the limit itself meets it
        (1.5, 1.4, 1.9, "<=", 1.6, "inconclusive"),  # the median alone would say met
        (1.7, 1.5, 1.9, "<=", 1.6, "inconclusive"),  # ...and here not met
        (1.8, 1.7, 1.9, "<=", 1.6, "not met"),
        # A speed-up or a share must be at least its limit.
        (6.0, 5.5, 7.0, ">=", 5.0, "met"),
        (5.2, 4.8, 5.9, ">=", 5.0, "inconclusive"),
        (4.0, 3.5, 4.9, ">=", 5.0, "not met"),
        # Below 3 rounds there is no interval: the median decides.
        (1.5, None, None, "<=", 1.6, "met"),
        (0.6, None, None, ">=", 0.7, "not met"),
    ],
)
def test_a_verdict_follows_the_interval_not_the_median_alone(
    value: float, low: float | None, high: float | None, op: str, limit: float, expected: str
) -> None:
    assert verdict(value, low, high, op, limit) == expected


def test_a_verdict_refuses_an_unknown_comparison() -> None:
    with pytest.raises(ValueError, match="op must be"):
        verdict(1.0, None, None, "<", 2.0)


def test_the_summary_counts_verdicts_and_says_what_inconclusive_needs() -> None:
    def result(*verdicts: str) -> Result:
        return Result("GET /x", checks=[{"verdict": v} for v in verdicts])

    line = summary([result("met", "inconclusive"), result("met", "not met")], rounds=5)
    assert line.startswith("targets: 2 met, 1 inconclusive, 1 not met")
    assert "more rounds than 5" in line
    assert summary([result("met")], rounds=3) == "targets: 1 met, 0 inconclusive, 0 not met"


@pytest.mark.slow
def test_sixty_ceiling_measures_an_endpoint_beside_the_bare_hello(tmp_path: Any) -> None:
    need_wrk()
    result = run_sixty(
        "ceiling",
        "-k",
        "GET /api/stages",
        "--rounds",
        "1",
        "--duration",
        "1",
        "--scale",
        "1",
        "--out",
        str(tmp_path),
        "--flamegraphs",
        str(tmp_path / "graphs"),
    )
    assert result.returncode == 0, result.stderr + result.stdout
    data = msgspec.json.decode((tmp_path / "ceiling.json").read_bytes())
    (stages,) = data["results"]
    assert "| **GET /api/stages** |" in (tmp_path / "ceiling.md").read_text()
    # The machine's CPU over the run, read from the kernel: shares of the time, as printed.
    assert set(data["cpu_during_run"]) == {"steal", "idle"}
    assert all(0 <= share <= 1 for share in data["cpu_during_run"].values())
    assert "During the run the host stole" in result.stdout
    # One flame graph per side, each of its own server: the app's layers appear only in the
    # service's, and the bare hello's is Starlette alone.
    graphs = {
        side: (tmp_path / "graphs" / name).read_text()
        for side, name in stages["flamegraphs"].items()
    }
    assert set(graphs) == {"legacy", "optimized", "hello"}
    assert all("<svg" in graph for graph in graphs.values())
    assert "RequestAccounting" in graphs["optimized"] and "RequestAccounting" in graphs["legacy"]
    assert "RequestAccounting" not in graphs["hello"] and "hello_app" in graphs["hello"]
    assert "flame graphs (3, open in a browser)" in result.stdout
    assert set(stages["rates"]) == {"legacy", "optimized", "hello"}
    assert all(len(r) == 1 and r[0] > 0 for r in stages["rates"].values())
    # Each server's CPU per request was read around its run: every side did some work.
    assert set(stages["cpu_us"]) == set(stages["rates"])
    assert all(len(c) == 1 and c[0] > 0 for c in stages["cpu_us"].values())
    checks = {(c["numerator"], c["denominator"]) for c in stages["checks"]}
    assert checks == {("optimized", "legacy"), ("hello", "optimized")}
    by_cpu = {c["numerator"]: c["cpu_ratio"] for c in stages["checks"]}
    cpu = {side: c[0] for side, c in stages["cpu_us"].items()}
    assert by_cpu["hello"] == pytest.approx(cpu["optimized"] / cpu["hello"])
    assert by_cpu["optimized"] == pytest.approx(cpu["legacy"] / cpu["optimized"])
    assert "cost over bare hello" in result.stdout
    # One round: no interval, so each verdict is the median's, and the summary counts them.
    assert all(c["verdict"] == ("met" if c["met"] else "not met") for c in stages["checks"])
    assert "targets: " in result.stdout


class _StarlettesJson(Response):
    """Starlette's own Response with the JSON media type, as a class attribute like ours."""

    media_type = "application/json"


@pytest.mark.parametrize(
    ("status", "headers"),
    [(200, None), (201, {}), (404, None), (204, None), (503, {"Retry-After": "1"})],
)
def test_json_response_headers_are_starlettes(status: int, headers: Any) -> None:
    """The direct paths make the very object Starlette's general ones would."""
    ours = JSONResponse({"data": [1, 2], "error": None}, status_code=status, headers=headers)
    theirs = _StarlettesJson(ours.body, status_code=status, headers=headers)
    assert ours.raw_headers == theirs.raw_headers
    assert vars(ours) == vars(theirs)  # the direct __init__ sets what Starlette's sets


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [(b"authorization", b"Bearer abc")],
        [(b"host", b"x"), (b"authorization", b"Bearer one"), (b"authorization", b"Bearer two")],
        [(b"authorization", "Bearer caf\u00e9".encode("latin-1"))],
    ],
)
def test_authorization_is_what_starlette_headers_return(raw: list[tuple[bytes, bytes]]) -> None:
    request = Request({"type": "http", "headers": raw})
    assert authorization(request) == request.headers.get("authorization")
