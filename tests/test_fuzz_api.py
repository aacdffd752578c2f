"""Schemathesis fuzzing of the live API for both base profiles (RELIABILITY I1, I3, I9, I10).

Every documented operation gets schemathesis's deterministic coverage cases plus hypothesis
generated positive and negative cases, sent as a non-admin owner. No answer may be a 5xx or
break the published contract (documented status code, content type, response schema). The
cases sent per operation, with the statuses seen, are recorded and printed at the end.

The fuzzer is synchronous and runs in a worker thread: uvicorn serves the API on the
session event loop, which must keep running while the fuzzer waits for answers.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sixty_core.listing import SORT_FIELDS
from tests.api_support import Api, api_fixture

T = TypeVar("T")
Operation: TypeAlias = schemathesis.APIOperation[Any, Any, Any, Any]
Case: TypeAlias = schemathesis.Case[Any]

PROFILES = ["legacy", "optimized"]
#: Hypothesis cases per operation and generation mode; hypothesis stops earlier when an
#: operation's input space is exhausted (e.g. ``detailed`` on the health check).
FUZZ_MAX_EXAMPLES = 100
#: Cap on schemathesis's deterministic coverage cases per operation (~175 at most today).
COVERAGE_MAX_CASES = 300
SORT_MAX_EXAMPLES = 200
#: The caller's own deals handed to each deal-id-taking operation for steered cases.
AIMED_DEALS = 8
#: Every wait on the fuzzing thread is bounded.
FUZZ_TIMEOUT_S = 240.0
HTTP_TIMEOUT_S = 30.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
POSITIVE = schemathesis.GenerationMode.POSITIVE
NEGATIVE = schemathesis.GenerationMode.NEGATIVE
#: Allowed ``sort`` / ``order`` values; empty means "absent" (the default applies).
SORTS = (*SORT_FIELDS, "")
ORDERS = ("asc", "desc", "")
#: Operations that take deal ids; each gets its own slice of the caller's deals.
DEAL_ID_OPERATIONS = (
    "GET /api/deals/{deal_id}",
    "PATCH /api/deals/{deal_id}",
    "POST /api/deals/{deal_id}/move",
    "POST /api/deals/bulk",
    "DELETE /api/deals/{deal_id}",
)

#: (profile, test) -> "METHOD /path phase" -> status -> count. Printed at module teardown.
CASES_TRIED: dict[tuple[str, str], dict[str, Counter[int]]] = {}


class Cancelled(Exception):
    """The test gave up waiting (timeout): the fuzzing thread stops sending."""


def fuzz_settings(max_examples: int) -> settings:
    """Reproducible and bounded: derandomized (a fixed seed), no example database, no
    per-example deadline (the machine is noisy), health checks off (slow I/O is expected)."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def format_tally(tally: dict[str, Counter[int]]) -> list[str]:
    lines = []
    for label, statuses in sorted(tally.items()):
        seen = " ".join(f"{status}x{count}" for status, count in sorted(statuses.items()))
        lines.append(f"{sum(statuses.values()):5d}  {label}  [{seen}]")
    return lines


@pytest.fixture(scope="module", autouse=True)
def report_cases_tried(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the cases sent per operation and phase once the module's tests have run."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not CASES_TRIED:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("fuzz cases tried (count, operation and phase, [status x count]):")
        for (profile, test), tally in sorted(CASES_TRIED.items()):
            total = sum(sum(statuses.values()) for statuses in tally.values())
            reporter.write_line(f"[{profile}] {test}: {total} cases")
            for line in format_tally(tally):
                reporter.write_line(f"  {line}")


fuzz_api = api_fixture("fuzz_api", PROFILES)


def new_tally(
    api: Api, test: str, record_property: Callable[[str, object], None]
) -> dict[str, Counter[int]]:
    """A fresh per-test tally, registered for the summary and the junit properties."""
    tally: dict[str, Counter[int]] = {}
    CASES_TRIED[(api.profile.name, test)] = tally
    record_property("cases_tried", tally)
    return tally


async def in_thread(func: Callable[[threading.Event], T]) -> T:
    """Run blocking ``func(cancelled)`` off the event loop (which keeps serving), for at
    most FUZZ_TIMEOUT_S; on timeout ``cancelled`` is set so the thread stops sending."""
    cancelled = threading.Event()
    try:
        async with asyncio.timeout(FUZZ_TIMEOUT_S):
            return await asyncio.to_thread(func, cancelled)
    finally:
        cancelled.set()


def base_url(api: Api) -> str:
    return str(api.http.base_url).rstrip("/")


def has_inputs(operation: Operation) -> bool:
    """Whether the operation takes a parameter or a body besides the bearer token (which
    schemathesis models as an ``Authorization`` header parameter)."""
    names = {p.name.lower() for p in operation.iter_parameters()}
    return bool(names - {"authorization"}) or bool(operation.body)


@dataclass(frozen=True)
class Aim:
    """Real values that steer half of the positive cases past "not found" and "forbidden"
    into the handlers' success paths: random UUIDs almost never name an existing deal or
    stage, and a non-admin may only create deals owned by themself."""

    owner_id: str
    stage_ids: list[str]
    #: operation label -> the caller's own deals it may use (disjoint: deletes consume them)
    deal_ids: dict[str, list[str]]

    def apply(self, case: Case, deals: list[str], stage_id: str) -> Case:
        label = case.operation.label
        if "deal_id" in case.path_parameters and deals:
            case.path_parameters = {**case.path_parameters, "deal_id": deals[0]}
        if isinstance(case.body, dict):
            body: dict[str, Any] = dict(case.body)
            if "stage_id" in body:
                body["stage_id"] = stage_id
            if "deal_ids" in body and deals:
                body["deal_ids"] = deals
            if label == "POST /api/deals":
                body["owner_id"] = self.owner_id
                body.setdefault("name", "Fuzzed deal")
                body.setdefault("company", "Fuzz Ltd")
            if label == "PATCH /api/deals/{deal_id}" and not body:
                body["name"] = "Fuzzed deal"  # an empty PATCH is refused by design
            case.body = body
        return case

    def steer(
        self, operation: Operation, strategy: st.SearchStrategy[Case]
    ) -> st.SearchStrategy[Case]:
        own = self.deal_ids.get(operation.label, [])
        deals = (
            st.lists(st.sampled_from(own), min_size=1, max_size=3, unique=True)
            if own
            else st.just([])
        )
        aimed = st.builds(self.apply, strategy, deals, st.sampled_from(self.stage_ids))
        return st.one_of(strategy, aimed)


async def aim_for(api: Api) -> Aim:
    """The caller's id, the real stage ids, and a disjoint slice of the caller's own deals
    for every operation that takes deal ids."""
    owner = api.user(1)
    stages = (await api.call("GET", "/api/stages", owner)).json()["data"]
    listed = (await api.call("GET", "/api/deals?limit=100", owner)).json()["data"]
    deals = [deal["id"] for deal in listed]
    assert len(deals) >= AIMED_DEALS * len(DEAL_ID_OPERATIONS), len(deals)
    slices = {
        label: deals[i * AIMED_DEALS : (i + 1) * AIMED_DEALS]
        for i, label in enumerate(DEAL_ID_OPERATIONS)
    }
    return Aim(owner.id, [stage["id"] for stage in stages], slices)


@dataclass
class Fuzzer:
    """Sends cases to one running service as one caller; records statuses and failures."""

    base_url: str
    headers: dict[str, str]
    session: requests.Session
    tally: dict[str, Counter[int]]
    cancelled: threading.Event
    aim: Aim | None = None
    failures: dict[str, BaseException] = field(default_factory=dict)

    def send(self, label: str, case: Case) -> None:
        """Send ``case`` with the caller's token; raise FailureGroup if a check fails."""
        if self.cancelled.is_set():
            raise Cancelled(label)
        response = case.call(
            base_url=self.base_url,
            session=self.session,
            headers=self.headers,
            timeout=HTTP_TIMEOUT_S,
        )
        self.tally.setdefault(label, Counter())[response.status_code] += 1
        case.validate_response(
            response,
            checks=CHECKS,
            headers=self.headers,
            transport_kwargs={"base_url": self.base_url, "session": self.session},
        )

    def cover(self, operation: Operation) -> None:
        """Schemathesis's deterministic coverage cases for ``operation`` (boundary values,
        missing and mistyped fields, missing token, undeclared methods); the first failure
        is recorded and the remaining cases still run."""
        label = f"{operation.label} coverage"
        schema = operation.schema
        modes = [POSITIVE, NEGATIVE] if has_inputs(operation) else [POSITIVE]
        config = schema.config.generation_for(operation=operation, phase="coverage")
        cases = schema.iter_coverage_cases(
            operation, generation_modes=modes, generation_config=config
        )
        for index, case in enumerate(cases):
            if index >= COVERAGE_MAX_CASES:
                break
            try:
                self.send(label, case)
            except (Exception, FailureGroup) as exc:
                self.failures.setdefault(label, exc)

    def fuzz(self, operation: Operation, mode: schemathesis.GenerationMode) -> None:
        """Up to FUZZ_MAX_EXAMPLES hypothesis cases for ``operation`` in ``mode``; the first
        failure, shrunk by hypothesis to a minimal case, is recorded."""
        label = f"{operation.label} {mode.value}"
        strategy = operation.as_strategy(generation_mode=mode, headers=self.headers)
        if mode is POSITIVE and self.aim is not None:
            strategy = self.aim.steer(operation, strategy)

        @fuzz_settings(FUZZ_MAX_EXAMPLES)
        @given(case=strategy)
        def run(case: Case) -> None:
            self.send(label, case)

        try:
            run()
        except (Exception, FailureGroup) as exc:
            self.failures[label] = exc

    def run_all(self, schema: schemathesis.BaseSchema, *, logout_headers: dict[str, str]) -> None:
        """Cover and fuzz (positive, and negative where there are inputs) every operation."""
        for result in schema.get_all_operations():
            if not isinstance(result, Ok):
                self.failures[f"unusable operation {len(self.failures)}"] = result.err()
                continue
            operation = result.ok()
            fuzzer = self
            if operation.path == "/api/auth/logout":
                # Logout revokes the token it is sent with: it gets an owner of its own.
                fuzzer = Fuzzer(
                    self.base_url,
                    logout_headers,
                    self.session,
                    self.tally,
                    self.cancelled,
                    failures=self.failures,
                )
            fuzzer.cover(operation)
            fuzzer.fuzz(operation, POSITIVE)
            if has_inputs(operation):
                fuzzer.fuzz(operation, NEGATIVE)


def fuzz_live_api(
    api: Api,
    tally: dict[str, Counter[int]],
    cancelled: threading.Event,
    *,
    aim: Aim | None = None,
    document: dict[str, Any] | None = None,
) -> dict[str, BaseException]:
    """Fuzz the running service as owner 1 (checking against ``document`` instead of the
    service's own OpenAPI document, when given); the failures by "METHOD /path phase"."""
    url = base_url(api)
    if document is None:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=HTTP_TIMEOUT_S)
    else:
        schema = schemathesis.openapi.from_dict(document)
    with requests.Session() as session:
        session.trust_env = False
        fuzzer = Fuzzer(url, api.auth(api.user(1)), session, tally, cancelled, aim)
        fuzzer.run_all(schema, logout_headers=api.auth(api.user(4)))
    return fuzzer.failures


def describe(failures: dict[str, BaseException]) -> str:
    """Each failure with its report (request as curl, response, violated check) and the
    notes hypothesis adds (the shrunk falsifying example)."""
    return "\n\n".join(
        "\n".join([f"== {label}", str(exc), *getattr(exc, "__notes__", [])])
        for label, exc in sorted(failures.items())
    )


@pytest.mark.slow
async def test_every_operation_survives_fuzzing(
    fuzz_api: Api, record_property: Callable[[str, object], None]
) -> None:
    """Coverage, positive and negative cases for every operation: never a 5xx, and every
    answer has a documented status code, content type and a body matching its schema."""
    tally = new_tally(fuzz_api, "schemathesis", record_property)
    aim = await aim_for(fuzz_api)
    failures = await in_thread(lambda cancelled: fuzz_live_api(fuzz_api, tally, cancelled, aim=aim))
    # For `sixty reliability`, which reads the cases tried from this test's junit XML.
    record_property("cases_tried_json", json.dumps({k: dict(v) for k, v in tally.items()}))
    assert not failures, describe(failures)
    operations = {label.rsplit(" ", 1)[0] for label in tally}
    assert len(operations) == 13, sorted(operations)
    # The fuzzer reached the handlers' success paths, not just the validators and gates,
    # so the success response schemas were checked too.
    for label, status in [
        ("GET /api/deals positive", 200),
        ("POST /api/deals positive", 201),
        ("GET /api/deals/{deal_id} positive", 200),
        ("PATCH /api/deals/{deal_id} positive", 200),
        ("POST /api/deals/{deal_id}/move positive", 200),
        ("DELETE /api/deals/{deal_id} positive", 200),
        ("POST /api/deals/bulk positive", 200),
        ("GET /api/deals/pipeline-stats positive", 200),
        ("GET /api/companies positive", 200),
    ]:
        assert tally[label][status] > 0, (label, tally[label])


async def test_the_fuzzer_reports_contract_violations(
    fuzz_api: Api, record_property: Callable[[str, object], None]
) -> None:
    """Against a deliberately wrong document (list ``count`` typed as a string, 400 not
    documented for the list) the same fuzzer reports both violations: the checks bite."""
    document = (await fuzz_api.http.get("/openapi.json")).json()
    wrong = copy.deepcopy(document)
    wrong["paths"] = {"/api/deals": {"get": wrong["paths"]["/api/deals"]["get"]}}
    del wrong["paths"]["/api/deals"]["get"]["responses"]["400"]
    wrong["components"]["schemas"]["DealListEnvelope"]["properties"]["count"] = {"type": "string"}
    tally = new_tally(fuzz_api, "wrong document", record_property)
    failures = await in_thread(
        lambda cancelled: fuzz_live_api(fuzz_api, tally, cancelled, document=wrong)
    )
    kinds = {
        type(failure).__name__
        for exc in failures.values()
        if isinstance(exc, FailureGroup)
        for failure in exc.exceptions
    }
    assert {"JsonSchemaError", "UndefinedStatusCode"} <= kinds, describe(failures)


def query_text() -> st.SearchStrategy[str]:
    """Arbitrary URL-encodable text (no lone surrogates), mixed with allow-list values and
    their near misses so that both answers are exercised."""
    near = ["name;DROP TABLE deals", "NAME", "name ", " asc", "d.name", "value--", "DESC"]
    return st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=40),
        st.sampled_from([*SORTS, *ORDERS, *near]),
    )


def probe_sort_and_order(
    api: Api, tally: dict[str, Counter[int]], cancelled: threading.Event
) -> None:
    label = "GET /api/deals sort+order"
    headers = api.auth(api.user(1))
    with httpx.Client(base_url=base_url(api), timeout=HTTP_TIMEOUT_S, trust_env=False) as client:

        @fuzz_settings(SORT_MAX_EXAMPLES)
        @given(sort=query_text(), order=query_text())
        def run(sort: str, order: str) -> None:
            if cancelled.is_set():
                raise Cancelled(label)
            params: dict[str, str | int] = {"sort": sort, "order": order, "limit": 5}
            response = client.get("/api/deals", params=params, headers=headers)
            tally.setdefault(label, Counter())[response.status_code] += 1
            expected = 200 if sort in SORTS and order in ORDERS else 400
            assert response.status_code == expected, (sort, order, response.text)
            body = response.json()
            if expected == 400:
                assert body["data"] is None
                assert body["error"]["code"] == "validation_error"
            else:
                assert body["error"] is None and body["count"] == len(body["data"])

        run()


async def test_sort_and_order_accept_only_the_allow_list(
    fuzz_api: Api, record_property: Callable[[str, object], None]
) -> None:
    """Arbitrary strings as ``sort`` / ``order`` on the deal list: 200 for allow-listed
    values (or empty, meaning the default), 400 for anything else, never a 5xx."""
    tally = new_tally(fuzz_api, "sort/order property", record_property)
    await in_thread(lambda cancelled: probe_sort_and_order(fuzz_api, tally, cancelled))
    statuses = tally["GET /api/deals sort+order"]
    assert set(statuses) == {200, 400}, statuses
    assert sum(statuses.values()) >= SORT_MAX_EXAMPLES // 2
