"""The two clients the deal service creates deals with through the edge upstream.

- :class:`LegacyEdgeClient` is the original ``apiCall`` + ``fetchWithRetry`` with the
  mutation options of ``useDeals`` (ORIGINAL_SYSTEM.md §2.1 "Mutations", §4.3):
  ``maxRetries 1``, so 2 attempts, and a wait of ``retryDelay·2^attempt`` after *every*
  failed attempt including the last (1 s then 2 s at ``time_scale=1``); no idempotency key, so
  the caller's fallback insert after an edge that did write creates a duplicate.
- :class:`OptimizedEdgeClient` makes one attempt and one retry under one overall deadline,
  behind a :class:`~sixty_core.breaker.CircuitBreaker`, and sends the caller's
  ``Idempotency-Key`` so a retry or the fallback insert never writes twice.

Both add the statements the upstream reports (``X-Sixty-Queries``) to the current request's
tally (:mod:`sixty_core.db.recorder`), failed attempts included.

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
import contextlib
import enum
import json
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Self

import httpx

from sixty_core.breaker import CircuitBreaker
from sixty_core.db.recorder import add_statements
from sixty_core.edge.protocol import (
    DEALS_PATH,
    IDEMPOTENCY_HEADER,
    MAX_BODY_BYTES,
    MAX_DETAIL_CHARS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    STATEMENTS_HEADER,
    encode_json,
)
from sixty_core.errors import (
    AuthError,
    ConflictError,
    IdempotencyKeyReusedError,
    LifecycleError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationError,
)

DEFAULT_MAX_CONNECTIONS = 100

DEFAULT_LEGACY_MAX_RETRIES = 1
DEFAULT_LEGACY_RETRY_DELAY_S = 1.0
#: The original's fetch had no timeout; ours bounds an attempt at this times ``time_scale``,
DEFAULT_LEGACY_REQUEST_TIMEOUT_S = 30.0
#: ... but never below this, so a quick run does not time out a healthy loopback answer.
MIN_LEGACY_REQUEST_TIMEOUT_S = 1.0

DEFAULT_DEADLINE_S = 2.0
DEFAULT_RETRIES = 1
DEFAULT_RETRY_DELAY_S = 0.05

Sleep = Callable[[float], Awaitable[None]]


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
        # Lanes: one single-connection httpx client per request in flight (see _lane).
        self._ssl_context: ssl.SSLContext | None = None
        self._lanes: list[httpx.AsyncClient] = []
        self._idle_lanes: asyncio.LifoQueue[httpx.AsyncClient] | None = None
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
        """Get ready to send (no I/O). Raises LifecycleError unless the client is new."""
        if self._state is not ClientState.NEW:
            raise LifecycleError(f"cannot open an edge client that is {self._state.value}")
        # One TLS context shared by every lane: httpx builds one per client (~15 ms) otherwise.
        self._ssl_context = httpx.create_ssl_context(trust_env=False)
        self._idle_lanes = asyncio.LifoQueue()
        self._state = ClientState.OPEN

    async def close(self) -> None:
        """Close every lane and its connection; closing twice is a no-op."""
        self._state, lanes, self._lanes = ClientState.CLOSED, self._lanes, []
        self._idle_lanes = None
        for http in lanes:
            await http.aclose()

    def _new_lane(self) -> httpx.AsyncClient:
        assert self._ssl_context is not None  # open() made it
        return httpx.AsyncClient(
            base_url=self._base_url,
            timeout=httpx.Timeout(self._request_timeout_s),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            verify=self._ssl_context,
            # The upstream is local; never route it through an environment proxy.
            trust_env=False,
            follow_redirects=False,
        )

    @contextlib.asynccontextmanager
    async def _lane(self) -> AsyncIterator[httpx.AsyncClient]:
        """Borrow a lane: an httpx client with one connection, used by one request at a time.

        Why not one shared httpx pool: httpcore's pool hands a queued request the first
        connection that is still IDLE, but a connection only turns ACTIVE after its new
        owner has passed two lock checkpoints, so requests that enter the pool in the same
        event-loop turn all get the same connection. All but one then fail with
        ConnectionNotAvailable and go round again, re-scanning every connection each time.
        Under a burst (the optimized service forwards its creates at once) that was 4
        rounds per create on average, 21 at p99, about 10 ms each: the optimized create's
        latency tail (p99 twice legacy's at equal throughput).

        At most ``max_connections`` lanes exist; beyond that callers wait in FIFO order, a
        wait bounded by the request timeout like httpx's own pool wait (``PoolTimeout``).
        """
        idle = self._idle_lanes
        if idle is None:
            raise LifecycleError(f"edge client is {self._state.value}, not open")
        if idle.empty() and len(self._lanes) < self._max_connections:
            lane = self._new_lane()
            self._lanes.append(lane)
        else:
            try:
                async with asyncio.timeout(self._request_timeout_s):
                    lane = await idle.get()
            except TimeoutError:
                raise httpx.PoolTimeout("no edge connection became free in time") from None
        try:
            yield lane
        finally:
            if self._idle_lanes is idle:  # not closed meanwhile
                idle.put_nowait(lane)

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
        self._require_open()
        self._stats["edge_calls"] += 1
        status: int | None = None
        try:
            async with (
                self._lane() as http,
                http.stream(
                    "POST",
                    DEALS_PATH,
                    content=encode_json(dict(fields)),
                    headers={"Content-Type": "application/json", **headers},
                ) as response,
            ):
                status = response.status_code
                add_statements(_statements_reported(response))
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

    def _require_open(self) -> None:
        if self._state is not ClientState.OPEN:
            raise LifecycleError(f"edge client is {self._state.value}, not open")

    def _count_wait(self, delay_s: float) -> None:
        self._stats["edge_wait_ms_total"] += round(delay_s * 1000)


def _statements_reported(response: httpx.Response) -> int:
    """The statements the upstream says it sent for this request (0 if it did not say)."""
    raw = response.headers.get(STATEMENTS_HEADER, "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 0


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

    ``useDeals`` called ``apiCall`` for a mutation with ``maxRetries 1, retryDelay 1000``
    (ORIGINAL_SYSTEM.md §2.1 "Mutations"), so: up to ``max_retries + 1`` = 2 attempts, and
    after *each* failed attempt (the last one too, §4.3) a sleep of ``retry_delay_s ·
    2^attempt · time_scale`` (1 s, then 2 s). Every non-2xx status and every transport error
    is retried, except 401 which raises :class:`AuthError` at once (§4.3). A 2xx whose body
    breaks the contract raises :class:`UpstreamError` at once, because the original parsed
    the body only after ``fetchWithRetry`` had returned. No idempotency key is sent.
    Each attempt is bounded by ``request_timeout_s · time_scale`` (at least
    :data:`MIN_LEGACY_REQUEST_TIMEOUT_S`); the original's fetch had no bound at all.
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
        if not (math.isfinite(time_scale) and time_scale >= 0):
            raise ValueError(f"time_scale must be a finite number >= 0, got {time_scale!r}")
        if not (math.isfinite(request_timeout_s) and request_timeout_s > 0):
            raise ValueError(f"request timeout must be > 0 seconds, got {request_timeout_s!r}")
        super().__init__(
            base_url,
            request_timeout_s=max(MIN_LEGACY_REQUEST_TIMEOUT_S, request_timeout_s * time_scale),
            max_connections=max_connections,
        )
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
        # The last failure's text only: the exception itself would hold its traceback, whose
        # frame is this one, which holds it back (a cycle only the cycle collector frees).
        last_failure = ""
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
                last_failure = str(exc)
            delay_s = self._retry_delay_s * 2**attempt * self._time_scale
            self._count_wait(delay_s)
            await self._sleep(delay_s)
        raise UpstreamError(
            f"edge create failed after {self._max_retries + 1} attempts: {last_failure}"
        )


class OptimizedEdgeClient(_EdgeClient):
    """One attempt plus ``retries`` retries, all inside one ``deadline_s``, behind a breaker.

    Each attempt first asks the breaker, and reports its outcome to it: transport errors,
    timeouts, 408, 429, 5xx and broken 2xx bodies are failures and are retried (safe: the
    ``Idempotency-Key`` makes the upstream write at most once). A 400, 409 or 422 refuses
    the deal itself (a bad reference, a reused key): it raises :class:`ValidationError`,
    :class:`ConflictError` or :class:`IdempotencyKeyReusedError` with the upstream's
    message, for the caller to pass on rather than fall back. Any other status (401
    included: it is our credentials, not the user's) ends the create with UpstreamError.
    Neither is retried, and both count as a breaker success, since the upstream did
    answer: one user's bad input never opens the breaker.
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
                last_failure = ""  # its text only, as in the legacy client
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
                            last_failure = str(exc)
                            continue
                        self._breaker.record_success()
                        raise _refusal(exc) from None
                    in_flight = False
                    self._breaker.record_success()
                    return deal
                raise UpstreamError(
                    f"edge create failed after {self._retries + 1} attempts: {last_failure}"
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
    """The error for a non-retryable answer: the deal's own fault (400/409/422) or
    upstream's."""
    if failed.status == 400:
        return ValidationError(failed.detail or "the edge upstream refused the deal")
    if failed.status == 409:
        return ConflictError(failed.detail or "the edge upstream reports a conflict")
    if failed.status == 422:
        return IdempotencyKeyReusedError(failed.detail or "the Idempotency-Key was reused")
    return UpstreamError(str(failed))


def _is_retryable(status: int | None) -> bool:
    return status is None or status in (408, 429) or status >= 500 or 200 <= status < 300
