"""Specification of sixty_core.breaker and sixty_core.edge: the circuit breaker, the
fault-injectable edge upstream, and the legacy and optimized clients over real HTTP."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from sixty_core.breaker import BreakerState, CircuitBreaker
from sixty_core.edge.client import LegacyEdgeClient, OptimizedEdgeClient
from sixty_core.edge.protocol import DEALS_PATH, IDEMPOTENCY_HEADER
from sixty_core.edge.upstream import EdgeFaults, create_edge_app
from sixty_core.errors import (
    AuthError,
    CircuitOpenError,
    ConfigError,
    ConflictError,
    LifecycleError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationError,
)

pytestmark = pytest.mark.timeout(30)

TIME_SCALE = 0.01
DEAL = {"name": "Acme renewal", "company": "Acme", "owner_id": 7, "value": 1200}


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class MemoryDealWriter:
    """An in-memory DealWriter that writes at most once per idempotency key."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}

    async def __call__(
        self, fields: Mapping[str, Any], idempotency_key: str | None
    ) -> dict[str, Any]:
        if idempotency_key is not None and idempotency_key in self.by_key:
            return dict(self.rows[self.by_key[idempotency_key]])
        deal_id = str(uuid.uuid4())
        self.rows[deal_id] = {**fields, "id": deal_id}
        if idempotency_key is not None:
            self.by_key[idempotency_key] = deal_id
        return dict(self.rows[deal_id])


class SleepRecorder:
    """An injectable sleep that records the requested delays and only yields once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await asyncio.sleep(0)


class StubUpstream:
    """A raw ASGI app answering POSTs from a script of (status, body chunks, headers)."""

    def __init__(self, *answers: tuple[int, list[bytes], dict[str, str]]) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        self.requests.append({k.decode(): v.decode() for k, v in scope["headers"]})
        status, chunks, headers = self.answers[min(len(self.requests), len(self.answers)) - 1]
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        for i, chunk in enumerate(chunks):
            more_body = i < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more_body})


def answer(status: int, body: object, **headers: str) -> tuple[int, list[bytes], dict[str, str]]:
    """One scripted stub answer: a JSON-encoded body unless it is already bytes."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return status, [raw], {"content-type": "application/json", **headers}


Serve = Callable[[ASGIApp], Awaitable[str]]


async def edge_stats(base_url: str) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=5) as http:
        response = await http.get("/functions/v1/stats")
        response.raise_for_status()
        stats: dict[str, int] = response.json()
        return stats


async def wait_until(predicate: Callable[[], Awaitable[bool]], *, within_s: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail after ``within_s`` (a bound, not a timing)."""
    async with asyncio.timeout(within_s):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.01)


def optimized(
    base_url: str, breaker: CircuitBreaker | None = None, **kw: Any
) -> OptimizedEdgeClient:
    return OptimizedEdgeClient(
        base_url, breaker=breaker or CircuitBreaker(), retry_delay_s=0.0, **kw
    )


# -- circuit breaker -------------------------------------------------------------------------


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    """Only an unbroken streak of failure_threshold failures opens the breaker."""
    breaker = CircuitBreaker(failure_threshold=3, clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.get_stats()["breaker_state"] == "closed"
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.get_stats() == {
        "breaker_state": "open",
        "breaker_opens": 1,
        "breaker_rejections": 0,
        "breaker_failures": 5,
    }


def test_open_breaker_rejects_and_counts_until_reset_timeout() -> None:
    """An open breaker refuses every call (allow False, before_call raises) until the timeout."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=10.0, clock=clock)
    breaker.record_failure()
    assert breaker.allow() is False
    clock.tick(9.9)
    with pytest.raises(CircuitOpenError, match="open"):
        breaker.before_call()
    assert breaker.get_stats()["breaker_rejections"] == 2
    clock.tick(0.1)
    assert breaker.allow() is True
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_lets_one_trial_through_and_success_closes() -> None:
    """Half-open grants exactly one trial; its success closes the breaker for everyone."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5.0, clock=clock)
    breaker.record_failure()
    clock.tick(5.0)
    assert [breaker.allow() for _ in range(3)] == [True, False, False]
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.allow() for _ in range(3))
    assert breaker.get_stats()["breaker_rejections"] == 2


def test_half_open_trial_failure_reopens_for_another_timeout() -> None:
    """A failed trial opens the breaker again and restarts the reset timeout."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=5.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.tick(5.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.tick(4.0)
    assert not breaker.allow()
    clock.tick(1.0)
    assert breaker.allow()
    assert breaker.get_stats()["breaker_opens"] == 2


def test_abandoned_or_lost_trial_frees_the_half_open_slot() -> None:
    """A cancelled trial frees the slot at once; a trial that never reports expires."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5.0, clock=clock)
    breaker.record_failure()
    clock.tick(5.0)
    assert breaker.allow()
    breaker.record_abandoned()
    assert breaker.allow()
    assert not breaker.allow()
    clock.tick(5.0)
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN


def test_late_outcomes_while_open_change_no_state() -> None:
    """A success from a call admitted before opening does not close an open breaker."""
    breaker = CircuitBreaker(failure_threshold=1, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.get_stats()["breaker_opens"] == 1
    assert breaker.get_stats()["breaker_failures"] == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"reset_timeout_s": -1.0}, "reset_timeout_s"),
        ({"reset_timeout_s": float("nan")}, "reset_timeout_s"),
    ],
)
def test_breaker_rejects_bad_config(kwargs: dict[str, Any], message: str) -> None:
    """Bad constructor arguments raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(**kwargs)


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_rate": 1.5}, "failure_rate must be between 0 and 1"),
        ({"failure_rate": float("nan")}, "failure_rate"),
        ({"hang_probability": -0.1}, "hang_probability"),
        ({"latency_ms_median": -1.0}, "latency_ms_median"),
        ({"latency_sigma": float("inf")}, "latency_sigma"),
        ({"time_scale": -0.5}, "time_scale"),
        ({"max_hang_s": 0.0}, "max_hang_s"),
    ],
)
def test_edge_faults_reject_out_of_range_values(kwargs: dict[str, Any], message: str) -> None:
    """Every out-of-range fault setting raises ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        EdgeFaults(**kwargs)


def test_edge_faults_from_settings_parses_and_names_bad_keys() -> None:
    """from_settings takes strings or numbers and raises ConfigError naming a bad key."""
    faults = EdgeFaults.from_settings({"failure_rate": "0.25", "seed": "7", "time_scale": 0.1})
    assert faults == EdgeFaults(failure_rate=0.25, seed=7, time_scale=0.1)
    with pytest.raises(ConfigError, match="fail_rate"):
        EdgeFaults.from_settings({"fail_rate": 0.5})
    with pytest.raises(ConfigError, match="latency_sigma"):
        EdgeFaults.from_settings({"latency_sigma": "wide"})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        EdgeFaults.from_settings({"hang_probability": "2"})


# -- the upstream app ------------------------------------------------------------------------


async def test_upstream_creates_deal_with_edge_envelope(serve: Serve) -> None:
    """A healthy upstream answers 201 {data: deal, error: null} and reports healthy."""
    writer = MemoryDealWriter()
    url = await serve(create_edge_app(writer, EdgeFaults()))
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
        health = await http.get("/functions/v1/health")
        created = await http.post(DEALS_PATH, json=DEAL)
    assert health.json() == {"status": "healthy"}
    assert created.status_code == 201
    body = created.json()
    assert body["error"] is None
    assert body["data"] == {**DEAL, "id": body["data"]["id"]}
    assert list(writer.rows) == [body["data"]["id"]]
    stats = await edge_stats(url)
    assert (stats["edge_requests"], stats["edge_writes"]) == (1, 1)


@pytest.mark.parametrize("payload", [b'{"name": "trunc', b"[1, 2]", b"\xff\xfe", b""])
async def test_upstream_rejects_malformed_body_with_400(serve: Serve, payload: bytes) -> None:
    """A body that is not a JSON object gets a 400 envelope and writes nothing."""
    writer = MemoryDealWriter()
    url = await serve(create_edge_app(writer, EdgeFaults()))
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
        response = await http.post(DEALS_PATH, content=payload)
    assert response.status_code == 400
    assert response.json() == {"data": None, "error": "request body must be a JSON object"}
    assert writer.rows == {}


async def test_injected_failure_answers_503_before_writing(serve: Serve) -> None:
    """failure_rate=1 answers 503 every time and never reaches the writer."""
    writer = MemoryDealWriter()
    url = await serve(create_edge_app(writer, EdgeFaults(failure_rate=1.0)))
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
        statuses = [(await http.post(DEALS_PATH, json=DEAL)).status_code for _ in range(3)]
    assert statuses == [503, 503, 503]
    assert writer.rows == {}
    stats = await edge_stats(url)
    assert (stats["edge_failures_injected"], stats["edge_writes"]) == (3, 0)


async def test_same_idempotency_key_writes_once(serve: Serve) -> None:
    """Posting the same Idempotency-Key twice writes one deal and returns it both times."""
    writer = MemoryDealWriter()
    url = await serve(create_edge_app(writer, EdgeFaults()))
    headers = {IDEMPOTENCY_HEADER: "create-1"}
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
        first = await http.post(DEALS_PATH, json=DEAL, headers=headers)
        second = await http.post(DEALS_PATH, json=DEAL, headers=headers)
        other = await http.post(DEALS_PATH, json=DEAL, headers={IDEMPOTENCY_HEADER: "create-2"})
    assert first.json()["data"]["id"] == second.json()["data"]["id"]
    assert other.json()["data"]["id"] != first.json()["data"]["id"]
    assert len(writer.rows) == 2


async def test_seeded_faults_repeat_the_same_decisions(serve: Serve) -> None:
    """Two upstreams with the same seed fail the same requests."""
    sequences = []
    for _ in range(2):
        url = await serve(
            create_edge_app(MemoryDealWriter(), EdgeFaults(failure_rate=0.5, seed=11))
        )
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
            sequences.append(
                [(await http.post(DEALS_PATH, json=DEAL)).status_code for _ in range(12)]
            )
    assert sequences[0] == sequences[1]
    assert {201, 503} == set(sequences[0])


async def test_latency_fault_is_scaled_by_time_scale(serve: Serve) -> None:
    """A 1000 ms median with sigma 0 at time_scale 0.01 sleeps 10 ms per request, then writes."""
    writer = MemoryDealWriter()
    faults = EdgeFaults(latency_ms_median=1000.0, latency_sigma=0.0, time_scale=TIME_SCALE)
    url = await serve(create_edge_app(writer, faults))
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
        statuses = [(await http.post(DEALS_PATH, json=DEAL)).status_code for _ in range(3)]
    assert statuses == [201, 201, 201]
    assert (await edge_stats(url))["edge_latency_injected_ms_total"] == 30


async def test_writer_error_is_a_500_without_details(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that raises gives 500 with a generic message; the detail goes to the log."""

    async def broken_writer(
        fields: Mapping[str, Any], idempotency_key: str | None
    ) -> dict[str, Any]:
        raise RuntimeError("relation deals does not exist")

    url = await serve(create_edge_app(broken_writer, EdgeFaults()))
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
        response = await http.post(DEALS_PATH, json=DEAL)
    assert response.status_code == 500
    assert response.json() == {"data": None, "error": "failed to create deal"}
    assert (await edge_stats(url))["edge_write_errors"] == 1
    assert "relation deals does not exist" in caplog.text


async def test_oversize_request_body_is_refused_with_413(serve: Serve) -> None:
    """A request body over 1 MiB is refused with 413 and nothing is written."""
    writer = MemoryDealWriter()
    url = await serve(create_edge_app(writer, EdgeFaults()))
    huge = {"name": "x" * (1024 * 1024 + 1)}
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
        response = await http.post(DEALS_PATH, json=huge)
    assert response.status_code == 413
    assert writer.rows == {}


async def test_faults_can_be_swapped_at_run_time(serve: Serve) -> None:
    """PUT /faults replaces the faults; a bad value is a 400 and keeps the old ones."""
    url = await serve(create_edge_app(MemoryDealWriter(), EdgeFaults(failure_rate=1.0)))
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
        bad = await http.put("/functions/v1/faults", json={"failure_rate": 3})
        assert (await http.post(DEALS_PATH, json=DEAL)).status_code == 503
        good = await http.put("/functions/v1/faults", json={"failure_rate": 0})
        assert (await http.post(DEALS_PATH, json=DEAL)).status_code == 201
    assert bad.status_code == 400
    assert "failure_rate" in bad.json()["error"]
    assert good.json()["data"]["failure_rate"] == 0.0


# -- legacy client ---------------------------------------------------------------------------


async def test_legacy_client_reproduces_the_original_mutation_retry_policy(
    serve: Serve,
) -> None:
    """useDeals' mutations (maxRetries 1): a failing edge gets 2 attempts, with a wait of
    1 then 2 x time_scale after each (the last one too), then UpstreamError."""
    url = await serve(create_edge_app(MemoryDealWriter(), EdgeFaults(failure_rate=1.0)))
    sleep = SleepRecorder()
    async with LegacyEdgeClient(url, time_scale=TIME_SCALE, sleep=sleep) as client:
        with pytest.raises(UpstreamError, match="after 2 attempts"):
            await client.create_deal(DEAL)
        stats = client.get_stats()
    assert sleep.delays == pytest.approx([1 * TIME_SCALE, 2 * TIME_SCALE])
    assert (await edge_stats(url))["edge_requests"] == 2
    assert stats["edge_calls"] == 2
    assert stats["edge_failures"] == 2
    assert stats["edge_retries"] == 1
    assert stats["edge_wait_ms_total"] == 30


async def test_legacy_attempt_timeout_scales_with_time_scale(serve: Serve) -> None:
    """A hanging edge costs 30 s x time_scale per attempt (at least 1 s), not 30 s: a
    quick run with time_scale 0.05 gives up after 2 attempts of 1.5 s."""
    url = await serve(create_edge_app(MemoryDealWriter(), EdgeFaults(hang_probability=1.0)))
    sleep = SleepRecorder()
    loop = asyncio.get_running_loop()
    async with LegacyEdgeClient(url, time_scale=0.05, sleep=sleep) as client:
        started = loop.time()
        with pytest.raises(UpstreamError, match="after 2 attempts"):
            await client.create_deal(DEAL)
        elapsed = loop.time() - started
        assert client.get_stats()["edge_timeouts"] == 2
    assert 2 * 1.5 <= elapsed < 2 * 30 * 0.05 + 5
    assert sleep.delays == pytest.approx([0.05, 0.1])


async def test_legacy_client_success_returns_deal_without_waiting(serve: Serve) -> None:
    """Against a healthy edge the legacy client returns the deal after one attempt."""
    writer = MemoryDealWriter()
    url = await serve(create_edge_app(writer, EdgeFaults()))
    sleep = SleepRecorder()
    async with LegacyEdgeClient(url, time_scale=TIME_SCALE, sleep=sleep) as client:
        deal = await client.create_deal(DEAL)
    assert deal["id"] in writer.rows
    assert deal["name"] == DEAL["name"]
    assert sleep.delays == []


async def test_legacy_client_sends_no_idempotency_key(serve: Serve) -> None:
    """The legacy client omits the Idempotency-Key (the original's duplicate-on-fallback bug)."""
    stub = StubUpstream(answer(201, {"data": {"id": "d1"}, "error": None}))
    url = await serve(stub)
    async with LegacyEdgeClient(url, sleep=SleepRecorder()) as client:
        await client.create_deal(DEAL)
    assert IDEMPOTENCY_HEADER.lower() not in stub.requests[0]


async def test_legacy_client_raises_auth_error_on_401_at_once(serve: Serve) -> None:
    """A 401 is not retried: AuthError after one attempt and no wait."""
    stub = StubUpstream(answer(401, {"error": "unauthorized"}))
    url = await serve(stub)
    sleep = SleepRecorder()
    async with LegacyEdgeClient(url, sleep=sleep) as client:
        with pytest.raises(AuthError):
            await client.create_deal(DEAL)
    assert (len(stub.requests), sleep.delays) == (1, [])


async def test_legacy_client_retries_refused_connections(serve: Serve) -> None:
    """A refused connection is a failed attempt, retried with the same backoff."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        sleep = SleepRecorder()
        async with LegacyEdgeClient(url, time_scale=TIME_SCALE, sleep=sleep) as client:
            with pytest.raises(UpstreamError):
                await client.create_deal(DEAL)
            assert client.get_stats()["edge_failures"] == 2
    assert len(sleep.delays) == 2


# -- optimized client ------------------------------------------------------------------------


async def test_optimized_client_times_out_on_hang_and_leaves_no_task(serve: Serve) -> None:
    """A hanging edge gives UpstreamTimeoutError within the deadline and no task stays pending."""
    url = await serve(create_edge_app(MemoryDealWriter(), EdgeFaults(hang_probability=1.0)))
    tasks_before = len(asyncio.all_tasks())
    async with optimized(url, deadline_s=0.3) as client:
        with pytest.raises(UpstreamTimeoutError, match="deadline"):
            await client.create_deal(DEAL, "hang-1")
        stats = client.get_stats()
    assert (stats["edge_timeouts"], stats["edge_calls"], stats["breaker_failures"]) == (1, 1, 1)

    async def drained() -> bool:
        return len(asyncio.all_tasks()) <= tasks_before

    async def server_saw_disconnect() -> bool:
        return (await edge_stats(url))["edge_hangs_active"] == 0

    await wait_until(drained)
    await wait_until(server_saw_disconnect)
    assert (await edge_stats(url))["edge_hangs_injected"] == 1


async def test_breaker_opens_rejects_without_calling_edge_then_recovers(serve: Serve) -> None:
    """After threshold failures the edge is no longer called; a half-open trial closes it."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=5.0, clock=clock)
    url = await serve(create_edge_app(MemoryDealWriter(), EdgeFaults(failure_rate=1.0)))
    async with optimized(url, breaker, deadline_s=5.0) as client:
        with pytest.raises(UpstreamError, match="after 2 attempts"):
            await client.create_deal(DEAL, "k1")
        with pytest.raises(CircuitOpenError):
            await client.create_deal(DEAL, "k2")  # first attempt fails, the retry is refused
        assert (await edge_stats(url))["edge_requests"] == 3
        for key in ("k3", "k4", "k5"):
            with pytest.raises(CircuitOpenError):
                await client.create_deal(DEAL, key)
        assert (await edge_stats(url))["edge_requests"] == 3

        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as http:
            (await http.put("/functions/v1/faults", json={})).raise_for_status()
        clock.tick(5.0)
        deal = await client.create_deal(DEAL, "k6")
        stats = client.get_stats()
    assert deal["id"]
    assert (await edge_stats(url))["edge_requests"] == 4
    assert stats["breaker_state"] == "closed"
    assert (stats["breaker_opens"], stats["breaker_rejections"]) == (1, 4)


async def test_optimized_retry_reuses_the_idempotency_key(serve: Serve) -> None:
    """A 503 then a 201: one retry, both attempts carry the caller's key, the deal returns."""
    stub = StubUpstream(
        answer(503, {"data": None, "error": "busy"}),
        answer(201, {"data": {"id": "d1", "name": "x"}, "error": None}),
    )
    url = await serve(stub)
    async with optimized(url) as client:
        deal = await client.create_deal(DEAL, "key-42")
        stats = client.get_stats()
    assert deal == {"id": "d1", "name": "x"}
    assert [r[IDEMPOTENCY_HEADER.lower()] for r in stub.requests] == ["key-42", "key-42"]
    assert (stats["edge_calls"], stats["edge_retries"], stats["edge_failures"]) == (2, 1, 1)


@pytest.mark.parametrize(
    ("status", "error", "match"),
    [
        (400, ValidationError, "stage is gone"),
        (409, ConflictError, "stage is gone"),
        (404, UpstreamError, "HTTP 404"),
    ],
)
async def test_optimized_client_does_not_retry_a_4xx(
    serve: Serve, status: int, error: type[Exception], match: str
) -> None:
    """A 4xx other than 408/429 ends the create at once and is no breaker failure; a 400
    or 409 refuses the deal itself and carries the upstream's words."""
    stub = StubUpstream(answer(status, {"data": None, "error": "stage is gone"}))
    url = await serve(stub)
    async with optimized(url) as client:
        with pytest.raises(error, match=match):
            await client.create_deal(DEAL, "k")
        stats = client.get_stats()
    assert (len(stub.requests), stats["breaker_failures"]) == (1, 0)


async def test_refused_deals_never_open_the_breaker(serve: Serve) -> None:
    """Ten deals the writer refuses (400 from the real upstream): no retry, breaker closed."""

    async def refusing_writer(
        fields: Mapping[str, Any], idempotency_key: str | None
    ) -> dict[str, Any]:
        raise ValidationError("a referenced record (stage) does not exist")

    url = await serve(create_edge_app(refusing_writer, EdgeFaults()))
    async with optimized(url) as client:
        for i in range(10):
            with pytest.raises(ValidationError, match="referenced record"):
                await client.create_deal(DEAL, f"k{i}")
        stats = client.get_stats()
    assert (stats["edge_calls"], stats["edge_retries"]) == (10, 0)
    assert (stats["breaker_state"], stats["breaker_failures"]) == ("closed", 0)
    upstream = await edge_stats(url)
    assert (upstream["edge_write_refusals"], upstream["edge_write_errors"]) == (10, 0)


async def test_optimized_client_end_to_end_writes_once_per_key(serve: Serve) -> None:
    """Through the real upstream, repeating a create with the same key returns the same deal."""
    writer = MemoryDealWriter()
    url = await serve(create_edge_app(writer, EdgeFaults()))
    async with optimized(url) as client:
        first = await client.create_deal(DEAL, "same")
        second = await client.create_deal(DEAL, "same")
    assert first["id"] == second["id"]
    assert len(writer.rows) == 1


async def test_burst_of_creates_never_races_for_a_connection(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creates sent in one event-loop turn each get a connection of their own at once.

    httpcore's shared pool hands every request that enters in the same turn the same
    still-IDLE connection; all but one then fail with ConnectionNotAvailable and go round
    again (``clear_connection``), about 10 ms a round on a busy service: a p99 of 4x the
    median under 32 concurrent creates. Each request must borrow a connection of its own.
    """
    from httpcore._async import connection_pool

    lost: list[object] = []
    original = connection_pool.AsyncPoolRequest.clear_connection

    def clear_connection(self: connection_pool.AsyncPoolRequest) -> None:
        lost.append(self)
        original(self)

    monkeypatch.setattr(connection_pool.AsyncPoolRequest, "clear_connection", clear_connection)
    writer = MemoryDealWriter()
    url = await serve(create_edge_app(writer, EdgeFaults()))
    async with optimized(url, max_connections=8) as client:
        for _ in range(3):  # the first burst opens the connections, later ones reuse them
            deals = await asyncio.gather(
                *(client.create_deal(DEAL, str(uuid.uuid4())) for _ in range(32))
            )
            assert len({d["id"] for d in deals}) == 32
        stats = client.get_stats()
    assert lost == []
    assert (stats["edge_calls"], stats["edge_failures"], len(writer.rows)) == (96, 0, 96)


async def test_waiting_for_a_free_connection_is_bounded(serve: Serve) -> None:
    """With every connection busy, a create waits at most its request timeout for one."""
    url = await serve(create_edge_app(MemoryDealWriter(), EdgeFaults(hang_probability=1.0)))
    async with LegacyEdgeClient(
        url, max_retries=0, request_timeout_s=1.0, max_connections=1, sleep=SleepRecorder()
    ) as client:
        results = await asyncio.gather(
            *(client.create_deal(DEAL) for _ in range(2)), return_exceptions=True
        )
        stats = client.get_stats()
    assert all(isinstance(r, UpstreamError) for r in results)
    assert (stats["edge_calls"], stats["edge_timeouts"]) == (2, 2)


MALFORMED = {
    "truncated_json": answer(201, b'{"data": {"id": "d1", "na'),
    "missing_id": answer(201, {"data": {"name": "x"}, "error": None}),
    "data_is_list": answer(201, {"data": [{"id": "d1"}], "error": None}),
    "id_is_bool": answer(201, {"data": {"id": True}, "error": None}),
    "error_in_success": answer(201, {"data": {"id": "d1"}, "error": "Deal created successfully"}),
    # 17 x 64 KiB > 1 MiB: once with a content-length (refused up front), once chunked.
    "declared_oversize": (
        200,
        [b" " * 65536] * 17,
        {"content-type": "application/json", "content-length": str(17 * 65536)},
    ),
    "streamed_oversize": (200, [b" " * 65536] * 17, {"content-type": "application/json"}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_answers_count_as_failures(serve: Serve, case: str) -> None:
    """A 2xx that breaks the contract is a failure for both clients (the optimized retries it)."""
    stub = StubUpstream(MALFORMED[case])
    url = await serve(stub)
    async with optimized(url) as client:
        with pytest.raises(UpstreamError, match="contract"):
            await client.create_deal(DEAL, "k")
        fast = client.get_stats()
    async with LegacyEdgeClient(url, sleep=SleepRecorder()) as legacy:
        with pytest.raises(UpstreamError, match="contract"):
            await legacy.create_deal(DEAL)
        slow = legacy.get_stats()
    assert (fast["edge_calls"], fast["edge_contract_errors"], fast["breaker_failures"]) == (2, 2, 2)
    assert (slow["edge_calls"], slow["edge_contract_errors"], slow["edge_failures"]) == (1, 1, 1)


async def test_client_lifecycle_is_explicit() -> None:
    """Creating before open or reopening raises LifecycleError; closing twice is harmless."""
    client = optimized("http://127.0.0.1:9")
    with pytest.raises(LifecycleError, match="new"):
        await client.create_deal(DEAL, "k")
    await client.open()
    with pytest.raises(LifecycleError, match="open"):
        await client.open()
    await client.close()
    await client.close()
    with pytest.raises(LifecycleError, match="closed"):
        await client.create_deal(DEAL, "k")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: LegacyEdgeClient("127.0.0.1:8001"), "http"),
        (lambda: LegacyEdgeClient("http://x", time_scale=-1), "time_scale"),
        (lambda: LegacyEdgeClient("http://x", max_retries=-1), "max_retries"),
        (lambda: optimized("http://x", deadline_s=0), "deadline_s"),
        (lambda: optimized("http://x", retries=-1), "retries"),
    ],
)
def test_clients_reject_bad_config(factory: Callable[[], object], message: str) -> None:
    """Bad client arguments raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=message):
        factory()


async def test_optimized_client_rejects_empty_idempotency_key() -> None:
    """An empty idempotency key is a caller bug: ValueError before any call."""
    async with optimized("http://127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="idempotency key"):
            await client.create_deal(DEAL, "")
        assert client.get_stats()["edge_calls"] == 0


async def _failed_create(client: LegacyEdgeClient | OptimizedEdgeClient) -> str:
    """Create against a failing edge and return the error's text, keeping nothing of it."""
    try:
        if isinstance(client, OptimizedEdgeClient):
            await client.create_deal(DEAL, "key-gc")
        else:
            await client.create_deal(DEAL)
    except UpstreamError as exc:
        return str(exc)
    raise AssertionError("the create did not fail")


@pytest.mark.parametrize("kind", ["legacy", "optimized"])
async def test_a_failed_create_leaves_no_cyclic_garbage_behind(serve: Serve, kind: str) -> None:
    """Every attempt of a create fails: once the caller drops the error, its attempts' errors
    are freed at once, never left in a reference cycle for the cycle collector (under load
    such garbage piles up between collections and the RSS creeps)."""
    url = await serve(create_edge_app(MemoryDealWriter(), EdgeFaults(failure_rate=1.0)))
    client: LegacyEdgeClient | OptimizedEdgeClient = (
        LegacyEdgeClient(url, time_scale=TIME_SCALE, sleep=SleepRecorder())
        if kind == "legacy"
        else optimized(url)
    )
    async with client:
        gc.collect()
        gc.disable()
        try:
            message = await _failed_create(client)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            cyclic = [o for o in gc.garbage if isinstance(o, Exception)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert "after 2 attempts" in message
    assert cyclic == []
