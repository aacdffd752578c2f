"""The edge upstream: a fault-injectable stand-in for the Supabase "deals" Edge Function.

:func:`create_edge_app` answers ``POST /functions/v1/deals`` the way the real Edge Function
did (``201 {"data": deal, "error": null}``) and can be told to fail (503), hang (accept and
never answer) or be slow (lognormal latency). It writes through an injected
:class:`DealWriter` that honours idempotency keys. The harness runs it as a process of its
own; the deal service never imports this module.

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
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from sixty_core.accounting import RequestAccounting
from sixty_core.edge.protocol import (
    DEALS_PATH,
    EDGE_PREFIX,
    IDEMPOTENCY_HEADER,
    MAX_BODY_BYTES,
    MAX_IDEMPOTENCY_KEY_CHARS,
    encode_json,
)
from sixty_core.errors import (
    ConfigError,
    ConflictError,
    IdempotencyKeyReusedError,
    NotFoundError,
    ValidationError,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_HANG_S = 600.0


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
        except (
            ValidationError,
            NotFoundError,
            ConflictError,
            IdempotencyKeyReusedError,
        ) as exc:
            # The deal itself is refused (a bad reference, a reused key): the caller's
            # fault, so no retry can help. The message is already safe to show.
            self.stats["edge_write_refusals"] += 1
            return _envelope(_refusal_status(exc), error=str(exc))
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
    "<message>"}`` with 400 bad body or refused deal, 409 conflict, 422 key reused with
    another body, 413 body over 1 MiB, 503 injected failure, 504 hang over ``max_hang_s``,
    500 writer error), ``GET /health``, ``GET /stats`` (the counters in
    the module table) and ``GET``/``PUT /faults`` (read or swap the faults at run time).
    """
    upstream = _EdgeUpstream(writer, faults)
    app = Starlette(
        routes=[
            Route(DEALS_PATH, upstream.create_deal, methods=["POST"]),
            Route(f"{EDGE_PREFIX}/health", upstream.health, methods=["GET"]),
            Route(f"{EDGE_PREFIX}/stats", upstream.get_stats, methods=["GET"]),
            Route(f"{EDGE_PREFIX}/faults", upstream.faults, methods=["GET", "PUT"]),
        ],
        # Every answer says how many statements it cost (X-Sixty-Queries), so the service
        # can count a create's insert for the request that asked for it.
        middleware=[Middleware(RequestAccounting)],
    )
    app.state.edge = upstream
    return app


def _refusal_status(exc: Exception) -> int:
    if isinstance(exc, IdempotencyKeyReusedError):
        return 422
    return 409 if isinstance(exc, ConflictError) else 400


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


def _json_response(status: int, value: object) -> Response:
    return Response(encode_json(value), status_code=status, media_type="application/json")


def _envelope(status: int, *, data: object = None, error: str | None = None) -> Response:
    return _json_response(status, {"data": data, "error": error})
