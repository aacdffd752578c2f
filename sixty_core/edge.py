"""The edge upstream: a fault-injectable stand-in for the Supabase "deals" Edge Function,
and the two clients the service uses to create deals through it.

The upstream (:func:`create_edge_app`) answers ``POST /functions/v1/deals`` the way the real
Edge Function did (``201 {"data": deal, "error": null}``) and can be told to fail (503), hang
(accept and never answer) or be slow (lognormal latency). It writes through an injected
:class:`DealWriter` that honours idempotency keys.

The clients reproduce and fix the original create path:

- :class:`LegacyEdgeClient` is the original ``fetchWithRetry``: 4 attempts, a wait of
  ``retry_delay·2^attempt`` after *every* failed attempt including the last (1+2+4+8 = 15 s
  at ``time_scale=1``), no idempotency key, so the caller's fallback insert after an edge that
  did write creates a duplicate.
- :class:`OptimizedEdgeClient` makes one attempt and one retry under one overall deadline,
  behind a :class:`~sixty_core.breaker.CircuitBreaker`, and sends the caller's
  ``Idempotency-Key`` so a retry or the fallback insert never writes twice.

Upstream stats (``GET /functions/v1/stats``):

================================== ============================================================
``edge_requests``                  ``POST /deals`` requests received (health/stats not counted)
``edge_failures_injected``         requests answered 503 by the failure fault (nothing written)
``edge_hangs_injected``            requests held open by the hang fault
``edge_hangs_active``              hung requests still held open (gauge)
``edge_latency_injected_ms_total`` latency slept by the latency fault
``edge_writes``                    deals returned by the writer (idempotent replays included)
``edge_write_errors``              writer calls that raised (answered 500)
``edge_write_refusals``            writer calls refusing the deal itself (answered 400 or 409)
``edge_bad_requests``              requests answered 400 or 413
================================== ============================================================

Client stats (``get_stats()``; the optimized client adds the breaker's keys):

======================== ===========================================================
``edge_creates``         ``create_deal`` calls
``edge_calls``           HTTP attempts sent to the upstream
``edge_failures``        attempts that failed (status, transport, timeout, contract)
``edge_contract_errors`` 2xx answers whose body broke the contract (in edge_failures)
``edge_timeouts``        attempts or deadlines that ran out of time
``edge_retries``         attempts after the first of a create
``edge_wait_ms_total``   backoff slept between (and, legacy, after) attempts
======================== ===========================================================
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import json
import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sixty_core.breaker import CircuitBreaker
from sixty_core.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    LifecycleError,
    NotFoundError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationError,
)

logger = logging.getLogger(__name__)

EDGE_PREFIX = "/functions/v1"
DEALS_PATH = f"{EDGE_PREFIX}/deals"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Longest upstream error text passed on to a caller.
MAX_DETAIL_CHARS = 200
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_BODY_BYTES = 1024 * 1024  # requests to the upstream and responses to the clients

DEFAULT_MAX_HANG_S = 600.0
DEFAULT_SERVE_HOST = "127.0.0.1"
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_GRACEFUL_SHUTDOWN_S = 5

DEFAULT_LEGACY_MAX_RETRIES = 3
DEFAULT_LEGACY_RETRY_DELAY_S = 1.0
DEFAULT_LEGACY_REQUEST_TIMEOUT_S = 30.0

DEFAULT_DEADLINE_S = 2.0
DEFAULT_RETRIES = 1
DEFAULT_RETRY_DELAY_S = 0.05

Sleep = Callable[[float], Awaitable[None]]


# -- faults ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EdgeFaults:
    """What the upstream does wrong, applied per request in the order hang, latency, failure.

    ``failure_rate`` is the probability of a 503 (decided before writing, so a 503 never
    wrote); ``hang_probability`` the probability of holding the request open without an
    answer until the client goes away (at most ``max_hang_s``, then 504); latency is
    lognormal with median ``latency_ms_median`` and shape ``latency_sigma`` (median 0 means
    none, sigma 0 a constant), multiplied by ``time_scale`` and capped at ``max_hang_s``.
    ``seed`` makes the sequence of decisions reproducible. Raises ValueError on bad values.

    A client that gives up during the latency does not stop the write: as with the real
    function, the deal is stored and nobody hears of it (the legacy duplicate scenario).
    """

    failure_rate: float = 0.0
    hang_probability: float = 0.0
    latency_ms_median: float = 0.0
    latency_sigma: float = 0.0
    time_scale: float = 1.0
    max_hang_s: float = DEFAULT_MAX_HANG_S
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("failure_rate", "hang_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in ("latency_ms_median", "latency_sigma", "time_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.max_hang_s) and self.max_hang_s > 0.0):
            raise ValueError(f"max_hang_s must be a finite number > 0, got {self.max_hang_s!r}")

    @classmethod
    def from_settings(cls, mapping: Mapping[str, object]) -> EdgeFaults:
        """Build faults from a mapping of field name to value (numbers or numeric strings).

        Missing keys keep their defaults; ``None`` or ``""`` for ``seed`` means unseeded.
        Raises :class:`ConfigError` naming the key on unknown keys or unusable values.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - set(fields))
        if unknown:
            raise ConfigError(f"unknown edge fault setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, raw in mapping.items():
            try:
                values[name] = _parse_seed(raw) if name == "seed" else _parse_float(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"edge fault {name} must be a number, got {raw!r}") from None
        try:
            return cls(**values)
        except ValueError as exc:
            raise ConfigError(f"edge faults: {exc}") from None


def _parse_float(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise TypeError(raw)
    return float(raw)


def _parse_seed(raw: object) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise TypeError(raw)
    return int(raw)


# -- the upstream app ------------------------------------------------------------------------


class DealWriter(Protocol):
    """Writes one deal and returns the stored row as a JSON-able dict with an ``id``.

    With an ``idempotency_key`` the writer must write at most once per key and return the
    first write's row on every replay. Values may be UUID, date/datetime or Decimal too.
    """

    async def __call__(
        self, fields: Mapping[str, Any], idempotency_key: str | None
    ) -> dict[str, Any]: ...


class _EdgeUpstream:
    """The handlers and counters behind :func:`create_edge_app` (one per app)."""

    def __init__(self, writer: DealWriter, faults: EdgeFaults) -> None:
        self._writer = writer
        self._set_faults(faults)
        self.stats = dict.fromkeys(
            (
                "edge_requests",
                "edge_failures_injected",
                "edge_hangs_injected",
                "edge_hangs_active",
                "edge_latency_injected_ms_total",
                "edge_writes",
                "edge_write_errors",
                "edge_write_refusals",
                "edge_bad_requests",
            ),
            0,
        )

    def _set_faults(self, faults: EdgeFaults) -> None:
        self._faults = faults
        self._rng = random.Random(faults.seed)

    async def create_deal(self, request: Request) -> Response:
        self.stats["edge_requests"] += 1
        # Draw every decision up front so the random stream is the same whichever branch runs.
        faults, rng = self._faults, self._rng
        hang = rng.random() < faults.hang_probability
        latency_s = _draw_latency_s(faults, rng)
        fail = rng.random() < faults.failure_rate
        try:
            body = await _read_body(request)
        except ClientDisconnect:
            return _envelope(499, error="client disconnected")
        if body is None:
            self.stats["edge_bad_requests"] += 1
            return _envelope(413, error=f"request body exceeds {MAX_BODY_BYTES} bytes")

        if hang:
            self.stats["edge_hangs_injected"] += 1
            self.stats["edge_hangs_active"] += 1
            try:
                if await _wait_for_disconnect(request, faults.max_hang_s):
                    return _envelope(499, error="client disconnected")
            finally:
                self.stats["edge_hangs_active"] -= 1
            return _envelope(504, error=f"edge hung for {faults.max_hang_s}s")
        if latency_s > 0:
            self.stats["edge_latency_injected_ms_total"] += round(latency_s * 1000)
            await asyncio.sleep(latency_s)
        if fail:
            self.stats["edge_failures_injected"] += 1
            return _envelope(503, error="edge function unavailable (injected failure)")

        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            self.stats["edge_bad_requests"] += 1
            return _envelope(400, error=f"{IDEMPOTENCY_HEADER} must be 1-200 characters")
        try:
            fields = json.loads(body)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            self.stats["edge_bad_requests"] += 1
            return _envelope(400, error="request body must be a JSON object")
        try:
            deal = await self._writer(fields, key)
        except (ValidationError, NotFoundError, ConflictError) as exc:
            # The deal itself is refused (a bad reference, a reused key): the caller's
            # fault, so no retry can help. The message is already safe to show.
            self.stats["edge_write_refusals"] += 1
            return _envelope(409 if isinstance(exc, ConflictError) else 400, error=str(exc))
        except Exception:
            # The edge function never leaked database text; log it here instead.
            self.stats["edge_write_errors"] += 1
            logger.exception("edge writer failed")
            return _envelope(500, error="failed to create deal")
        self.stats["edge_writes"] += 1
        return _envelope(201, data=deal)

    async def health(self, request: Request) -> Response:
        return _json_response(200, {"status": "healthy"})

    async def get_stats(self, request: Request) -> Response:
        return _json_response(200, dict(self.stats))

    async def faults(self, request: Request) -> Response:
        """GET shows the active faults; PUT replaces them (and reseeds) from a JSON object."""
        if request.method == "PUT":
            try:
                body = await _read_body(request)
            except ClientDisconnect:
                return _envelope(499, error="client disconnected")
            try:
                mapping = json.loads(body) if body is not None else None
                if not isinstance(mapping, dict):
                    raise ConfigError("edge faults must be a JSON object")
                self._set_faults(EdgeFaults.from_settings(mapping))
            except (ValueError, ConfigError) as exc:
                return _envelope(400, error=str(exc))
        return _envelope(200, data=dataclasses.asdict(self._faults))


def create_edge_app(writer: DealWriter, faults: EdgeFaults) -> Starlette:
    """Return the upstream ASGI app; it does no I/O until it serves a request.

    Routes under ``/functions/v1``: ``POST /deals`` (JSON object body, optional
    ``Idempotency-Key``; 201 ``{"data": deal, "error": null}``, or ``{"data": null, "error":
    "<message>"}`` with 400 bad body, 413 body over 1 MiB, 503 injected failure, 504 hang
    over ``max_hang_s``, 500 writer error), ``GET /health``, ``GET /stats`` (the counters in
    the module table) and ``GET``/``PUT /faults`` (read or swap the faults at run time).
    """
    upstream = _EdgeUpstream(writer, faults)
    app = Starlette(
        routes=[
            Route(DEALS_PATH, upstream.create_deal, methods=["POST"]),
            Route(f"{EDGE_PREFIX}/health", upstream.health, methods=["GET"]),
            Route(f"{EDGE_PREFIX}/stats", upstream.get_stats, methods=["GET"]),
            Route(f"{EDGE_PREFIX}/faults", upstream.faults, methods=["GET", "PUT"]),
        ]
    )
    app.state.edge = upstream
    return app


def serve_edge(app: ASGIApp, *, host: str = DEFAULT_SERVE_HOST, port: int) -> None:
    """Serve ``app`` with uvicorn until SIGINT/SIGTERM; blocks the calling thread."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        ws="none",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=DEFAULT_GRACEFUL_SHUTDOWN_S,
    )
    uvicorn.Server(config).run()


def _draw_latency_s(faults: EdgeFaults, rng: random.Random) -> float:
    z = rng.gauss(0.0, 1.0)
    if faults.latency_ms_median <= 0.0:
        return 0.0
    latency_s = faults.latency_ms_median / 1000 * math.exp(faults.latency_sigma * z)
    return min(latency_s * faults.time_scale, faults.max_hang_s)


async def _read_body(request: Request) -> bytes | None:
    """Return the request body, or None once it grows past :data:`MAX_BODY_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _wait_for_disconnect(request: Request, max_wait_s: float) -> bool:
    """Wait until the client goes away (True) or ``max_wait_s`` passes (False)."""
    try:
        async with asyncio.timeout(max_wait_s):
            # The body is consumed, so the server's next message can only be the disconnect.
            while (await request.receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


def _json_default(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _encode_json(value: object) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def _json_response(status: int, value: object) -> Response:
    return Response(_encode_json(value), status_code=status, media_type="application/json")


def _envelope(status: int, *, data: object = None, error: str | None = None) -> Response:
    return _json_response(status, {"data": data, "error": error})


# -- clients ---------------------------------------------------------------------------------


class ClientState(enum.Enum):
    """Lifecycle of an edge client: created, then opened once, then closed for good."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class _ContractError(Exception):
    """A 2xx answer whose body is oversize, not JSON, or not ``{"data": {"id": ...}}``."""


class _AttemptFailed(Exception):
    """One HTTP attempt failed; ``status`` is None for transport errors and timeouts.

    ``detail`` is the upstream's own ``error`` text of a non-2xx answer, if it sent one.
    """

    def __init__(self, reason: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.detail = detail


class _EdgeClient:
    """Lifecycle, the bounded HTTP attempt, the response contract and the counters."""

    def __init__(self, base_url: str, *, request_timeout_s: float, max_connections: int) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"edge base_url must be an http(s) URL, got {base_url!r}")
        if not (math.isfinite(request_timeout_s) and request_timeout_s > 0):
            raise ValueError(f"request timeout must be > 0 seconds, got {request_timeout_s!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._max_connections = max_connections
        self._base_url = base_url
        self._request_timeout_s = request_timeout_s
        self._http: httpx.AsyncClient | None = None
        self._state = ClientState.NEW
        self._stats = dict.fromkeys(
            (
                "edge_creates",
                "edge_calls",
                "edge_failures",
                "edge_contract_errors",
                "edge_timeouts",
                "edge_retries",
                "edge_wait_ms_total",
            ),
            0,
        )

    @property
    def state(self) -> ClientState:
        return self._state

    async def open(self) -> None:
        """Create the HTTP client (no I/O). Raises LifecycleError unless the client is new."""
        if self._state is not ClientState.NEW:
            raise LifecycleError(f"cannot open an edge client that is {self._state.value}")
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            # Waiting for a pooled connection is bounded by the same timeout as the request.
            timeout=httpx.Timeout(self._request_timeout_s),
            limits=httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
            ),
            # The upstream is local; never route it through an environment proxy.
            trust_env=False,
            follow_redirects=False,
        )
        self._state = ClientState.OPEN

    async def close(self) -> None:
        """Close the HTTP client and its connections; closing twice is a no-op."""
        self._state, http, self._http = ClientState.CLOSED, self._http, None
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def get_stats(self) -> dict[str, Any]:
        """Return the counters documented in the module table (a fresh dict)."""
        return dict(self._stats)

    async def _attempt(self, fields: Mapping[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """POST one deal and return ``data`` of a contract-abiding answer.

        Raises :class:`_AttemptFailed` on a non-2xx status, a transport error, a timeout
        (counted in ``edge_timeouts``) or a 2xx body that breaks the contract.
        """
        http = self._require_open()
        self._stats["edge_calls"] += 1
        status: int | None = None
        try:
            async with http.stream(
                "POST",
                DEALS_PATH,
                content=_encode_json(dict(fields)),
                headers={"Content-Type": "application/json", **headers},
            ) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    raise _AttemptFailed(
                        f"edge answered HTTP {status}",
                        status=status,
                        detail=await _error_detail(response),
                    )
                return _parse_deal(await _read_bounded(response))
        except _AttemptFailed:
            self._stats["edge_failures"] += 1
            raise
        except _ContractError as exc:
            self._stats["edge_failures"] += 1
            self._stats["edge_contract_errors"] += 1
            raise _AttemptFailed(f"edge answer broke the contract: {exc}", status=status) from None
        except httpx.TimeoutException as exc:
            self._stats["edge_failures"] += 1
            self._stats["edge_timeouts"] += 1
            raise _AttemptFailed(f"edge request timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            self._stats["edge_failures"] += 1
            raise _AttemptFailed(f"edge request failed: {type(exc).__name__}: {exc}") from None

    def _require_open(self) -> httpx.AsyncClient:
        if self._http is None:
            raise LifecycleError(f"edge client is {self._state.value}, not open")
        return self._http

    def _count_wait(self, delay_s: float) -> None:
        self._stats["edge_wait_ms_total"] += round(delay_s * 1000)


async def _read_bounded(response: httpx.Response) -> bytes:
    """Read at most :data:`MAX_BODY_BYTES` of decoded body; raise _ContractError beyond."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _ContractError(f"response body of {declared} bytes exceeds {MAX_BODY_BYTES}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            # Stop reading here: leaving the stream closes the connection, not drains it.
            raise _ContractError(f"response body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _error_detail(response: httpx.Response) -> str:
    """The ``error`` text of a failed answer, at most :data:`MAX_DETAIL_CHARS`; "" if none."""
    try:
        envelope = json.loads(await _read_bounded(response))
    except (_ContractError, ValueError, UnicodeDecodeError, httpx.HTTPError):
        return ""
    error = envelope.get("error") if isinstance(envelope, dict) else None
    return error[:MAX_DETAIL_CHARS] if isinstance(error, str) else ""


def _parse_deal(body: bytes) -> dict[str, Any]:
    """Return ``data`` of ``{"data": {"id": ...}, "error": null}``, else raise _ContractError."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _ContractError("body is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise _ContractError(f"body is a JSON {type(envelope).__name__}, not an object")
    if envelope.get("error"):
        raise _ContractError(f"body carries an error: {envelope['error']!r}")
    deal = envelope.get("data")
    if not isinstance(deal, dict):
        raise _ContractError(f"data is {type(deal).__name__}, not an object")
    deal_id = deal.get("id")
    if isinstance(deal_id, bool) or not isinstance(deal_id, str | int) or deal_id == "":
        raise _ContractError(f"data.id is missing or not a string/integer: {deal_id!r}")
    return deal


class LegacyEdgeClient(_EdgeClient):
    """The original ``fetchWithRetry`` + ``apiCall`` create path, bugs included.

    Up to ``max_retries + 1`` attempts; after *each* failed attempt (the last one too) it
    sleeps ``retry_delay_s · 2^attempt · time_scale``. Every non-2xx status and every
    transport error is retried, except 401 which raises :class:`AuthError` at once. A 2xx
    whose body breaks the contract raises :class:`UpstreamError` at once, because the
    original parsed the body only after ``fetchWithRetry`` had returned. No idempotency key
    is sent. ``request_timeout_s`` bounds each attempt (the original had no bound at all)
    and is not scaled.
    """

    def __init__(
        self,
        base_url: str,
        *,
        time_scale: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        max_retries: int = DEFAULT_LEGACY_MAX_RETRIES,
        retry_delay_s: float = DEFAULT_LEGACY_RETRY_DELAY_S,
        request_timeout_s: float = DEFAULT_LEGACY_REQUEST_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        super().__init__(
            base_url, request_timeout_s=request_timeout_s, max_connections=max_connections
        )
        if not (math.isfinite(time_scale) and time_scale >= 0):
            raise ValueError(f"time_scale must be a finite number >= 0, got {time_scale!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if not (math.isfinite(retry_delay_s) and retry_delay_s >= 0):
            raise ValueError(f"retry_delay_s must be a finite number >= 0, got {retry_delay_s!r}")
        self._time_scale = time_scale
        self._sleep = sleep
        self._max_retries = max_retries
        self._retry_delay_s = retry_delay_s

    async def create_deal(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create a deal through the edge; return its row.

        Raises :class:`AuthError` on 401, :class:`UpstreamError` once every attempt failed
        (after the full backoff) or on a broken 2xx body; the caller then inserts directly.
        """
        self._require_open()
        self._stats["edge_creates"] += 1
        last: _AttemptFailed | None = None
        for attempt in range(self._max_retries + 1):
            if attempt:
                self._stats["edge_retries"] += 1
            try:
                return await self._attempt(fields, {})
            except _AttemptFailed as exc:
                if exc.status == 401:
                    raise AuthError("edge upstream refused the credentials (HTTP 401)") from None
                if exc.status is not None and 200 <= exc.status < 300:
                    raise UpstreamError(str(exc)) from None
                last = exc
            delay_s = self._retry_delay_s * 2**attempt * self._time_scale
            self._count_wait(delay_s)
            await self._sleep(delay_s)
        raise UpstreamError(f"edge create failed after {self._max_retries + 1} attempts: {last}")


class OptimizedEdgeClient(_EdgeClient):
    """One attempt plus ``retries`` retries, all inside one ``deadline_s``, behind a breaker.

    Each attempt first asks the breaker, and reports its outcome to it: transport errors,
    timeouts, 408, 429, 5xx and broken 2xx bodies are failures and are retried (safe: the
    ``Idempotency-Key`` makes the upstream write at most once). A 400 or 409 refuses the
    deal itself (a bad reference, a reused key): it raises :class:`ValidationError` or
    :class:`ConflictError` with the upstream's message, for the caller to pass on rather
    than fall back. Any other status (401 included: it is our credentials, not the user's)
    ends the create with UpstreamError. Neither is retried, and both count as a breaker
    success, since the upstream did answer: one user's bad input never opens the breaker.
    Between attempts it sleeps ``retry_delay_s`` (not scaled: it reproduces nothing).
    """

    def __init__(
        self,
        base_url: str,
        *,
        breaker: CircuitBreaker,
        deadline_s: float = DEFAULT_DEADLINE_S,
        retries: int = DEFAULT_RETRIES,
        retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
        sleep: Sleep = asyncio.sleep,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not (math.isfinite(deadline_s) and deadline_s > 0):
            raise ValueError(f"deadline_s must be a finite number > 0, got {deadline_s!r}")
        super().__init__(base_url, request_timeout_s=deadline_s, max_connections=max_connections)
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if not (math.isfinite(retry_delay_s) and retry_delay_s >= 0):
            raise ValueError(f"retry_delay_s must be a finite number >= 0, got {retry_delay_s!r}")
        self._breaker = breaker
        self._deadline_s = deadline_s
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._sleep = sleep

    def get_stats(self) -> dict[str, Any]:
        """Return the client counters plus the breaker's (a fresh dict)."""
        return {**self._stats, **self._breaker.get_stats()}

    async def create_deal(self, fields: Mapping[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Create a deal through the edge under the deadline; return its row.

        ``idempotency_key`` is chosen by the caller per create and must be reused for the
        fallback insert. Raises :class:`CircuitOpenError` when the breaker refuses (before or
        between attempts), :class:`UpstreamTimeoutError` when the deadline passes, and
        :class:`UpstreamError` for anything else; the caller then inserts directly, once.
        :class:`ValidationError` / :class:`ConflictError` when the upstream refused the deal
        itself (400 / 409); a fallback insert would be refused the same way.
        """
        if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            raise ValueError(
                f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters, "
                f"got {len(idempotency_key)}"
            )
        self._require_open()
        self._stats["edge_creates"] += 1
        headers = {IDEMPOTENCY_HEADER: idempotency_key}
        in_flight = False
        try:
            async with asyncio.timeout(self._deadline_s):
                last: _AttemptFailed | None = None
                for attempt in range(self._retries + 1):
                    if attempt:
                        self._count_wait(self._retry_delay_s)
                        await self._sleep(self._retry_delay_s)
                    self._breaker.before_call()
                    if attempt:
                        self._stats["edge_retries"] += 1
                    in_flight = True
                    try:
                        deal = await self._attempt(fields, headers)
                    except _AttemptFailed as exc:
                        in_flight = False
                        if _is_retryable(exc.status):
                            self._breaker.record_failure()
                            last = exc
                            continue
                        self._breaker.record_success()
                        raise _refusal(exc) from None
                    in_flight = False
                    self._breaker.record_success()
                    return deal
                raise UpstreamError(
                    f"edge create failed after {self._retries + 1} attempts: {last}"
                )
        except TimeoutError:
            self._stats["edge_timeouts"] += 1
            if in_flight:
                self._stats["edge_failures"] += 1
                self._breaker.record_failure()
            raise UpstreamTimeoutError(
                f"edge create missed its {self._deadline_s}s deadline"
            ) from None
        except asyncio.CancelledError:
            # Cancelled from outside: the attempt has no verdict, so free a half-open trial.
            if in_flight:
                self._breaker.record_abandoned()
            raise


def _refusal(failed: _AttemptFailed) -> Exception:
    """The error for a non-retryable answer: the deal's own fault (400/409) or upstream's."""
    if failed.status == 400:
        return ValidationError(failed.detail or "the edge upstream refused the deal")
    if failed.status == 409:
        return ConflictError(failed.detail or "the edge upstream reports a conflict")
    return UpstreamError(str(failed))


def _is_retryable(status: int | None) -> bool:
    return status is None or status in (408, 429) or status >= 500 or 200 <= status < 300
