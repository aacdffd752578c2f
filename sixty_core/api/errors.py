"""Map errors to HTTP statuses and the failure envelope; nothing raw ever reaches a client.

Domain errors carry messages written for users, so they are passed through. Everything
else (asyncpg text, tracebacks) stops at the error boundary as a generic 500.
"""

from __future__ import annotations

import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sixty_core.api.responses import fail
from sixty_core.errors import (
    AuthError,
    CircuitOpenError,
    ClientDisconnectedError,
    ConflictError,
    DatabaseUnavailableError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    LifecycleError,
    NotFoundError,
    OverloadedError,
    RequestTimeoutError,
    SixtyError,
    TooManyRequestsError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationError,
)

#: (error class, status, code) in match order: subclasses before their bases.
ERROR_STATUS: tuple[tuple[type[SixtyError], int, str], ...] = (
    (ValidationError, 400, "validation_error"),
    (AuthError, 401, "unauthorized"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (RequestTimeoutError, 408, "request_timeout"),
    (IdempotencyKeyReusedError, 422, "idempotency_key_reused"),
    (TooManyRequestsError, 429, "too_many_requests"),
    # Nobody reads this answer; the status names the case in logs (nginx's 499).
    (ClientDisconnectedError, 499, "client_disconnected"),
    (OverloadedError, 503, "overloaded"),
    (DatabaseUnavailableError, 503, "database_unavailable"),
    (LifecycleError, 503, "unavailable"),
    (UpstreamTimeoutError, 504, "upstream_timeout"),
    (CircuitOpenError, 503, "upstream_unavailable"),
    (UpstreamError, 502, "upstream_error"),
)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(exc: SixtyError) -> Response:
    """The envelope and status for a domain error (500 for an unmapped one)."""
    for cls, status, code in ERROR_STATUS:
        if isinstance(exc, cls):
            headers: dict[str, str] = {}
            retry = getattr(exc, "retry_after_s", None)
            if status in (429, 503):
                headers["Retry-After"] = str(max(1, math.ceil(retry or 1)))
            if status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            return fail(status, code, str(exc), headers=headers)
    return fail(500, "internal_error", "internal error; the request was not completed")


async def handle_sixty_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SixtyError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in our envelope."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = {
        404: f"no route for {request.method} {request.url.path}",
        405: f"method {request.method} not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return fail(exc.status_code, code, message, headers=exc.headers)
