"""The Starlette app factory: ``create_app(settings, profile, dsn=..., edge_url=...)``.

The lifespan builds every component for the profile (:mod:`sixty_core.api.components`)
and closes them on shutdown. Middleware, outermost first:

1. :class:`RequestAccounting` — counts the statements and auth lookups each request made
   (``X-Sixty-Queries`` / ``X-Sixty-Auth-Lookups`` response headers, per-endpoint totals)
   and records the request in the profile's request log;
2. Starlette's own error middleware;
3. :class:`~sixty_core.api.boundary.MemoryAwareErrorBoundary` — any unexpected exception
   becomes a sanitized 500 envelope, and triggers cleanup when memory is high;
4. domain errors -> mapped statuses (:mod:`sixty_core.api.errors`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sixty_core.api.boundary import MemoryAwareErrorBoundary
from sixty_core.api.components import Components, build
from sixty_core.api.errors import handle_http_exception, handle_sixty_error
from sixty_core.api.metrics import metrics_endpoint
from sixty_core.api.openapi import build_openapi
from sixty_core.api.responses import JSONResponse
from sixty_core.api.routes import routes
from sixty_core.db.recorder import recording
from sixty_core.errors import SixtyError
from sixty_core.memory import MemoryManager
from sixty_core.profiles import Profile
from sixty_core.settings import Settings

#: The request log keeps at most this much of a request body per entry.
MAX_LOGGED_BODY = 64 * 1024


class RequestAccounting:
    """Pure ASGI middleware: per-request query tally, endpoint totals, request log."""

    def __init__(self, app: ASGIApp, *, holder: Starlette) -> None:
        self.app = app
        self._holder = holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        body = bytearray()

        async def receive_logged() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < MAX_LOGGED_BODY:
                body.extend(message.get("body", b"")[: MAX_LOGGED_BODY - len(body)])
            return message

        with recording() as tally:

            async def send_counted(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = list(message.get("headers", []))
                    headers.append((b"x-sixty-queries", str(tally.queries).encode()))
                    headers.append((b"x-sixty-auth-lookups", str(tally.auth_lookups).encode()))
                    message = {**message, "headers": headers}
                await send(message)

            try:
                await self.app(scope, receive_logged, send_counted)
            finally:
                self._account(
                    scope,
                    status,
                    tally.queries,
                    tally.auth_lookups,
                    (time.perf_counter() - started) * 1000,
                    bytes(body),
                )

    def _account(
        self, scope: Scope, status: int, queries: int, lookups: int, duration_ms: float, body: bytes
    ) -> None:
        comp: Components | None = getattr(self._holder.state, "components", None)
        if comp is None:
            return
        route = scope.get("route")
        endpoint = f"{scope['method']} {getattr(route, 'path', 'unmatched')}"
        figures = comp.endpoint_stats.setdefault(
            endpoint, {"requests": 0, "queries": 0, "auth_lookups": 0}
        )
        figures["requests"] += 1
        figures["queries"] += queries
        figures["auth_lookups"] += lookups
        comp.request_log.record(scope["method"], scope["path"], status, duration_ms, body or None)


def create_app(settings: Settings, profile: Profile, *, dsn: str, edge_url: str) -> ASGIApp:
    """An ASGI app serving the deal API in ``profile`` on the database at ``dsn``, creating
    deals through the edge upstream at ``edge_url``. Nothing is opened until the lifespan
    starts (uvicorn, or ``asgi_lifespan.LifespanManager`` / TestClient in tests)."""
    memory = MemoryManager(
        tracking="resource_tracking" in profile.flags,
        warning_mb=settings.memory_warning_mb,
        critical_mb=settings.memory_critical_mb,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with build(settings, profile, dsn=dsn, edge_url=edge_url, memory=memory) as comp:
            app.state.components = comp
            app.state.metrics = metrics_endpoint(comp)
            app.state.openapi = build_openapi(legacy_create="robust_create" not in profile.flags)
            try:
                yield
            finally:
                app.state.components = None

    async def metrics(request: Request) -> Response:
        endpoint: Any = request.app.state.metrics
        response: Response = await endpoint(request)
        return response

    async def openapi(request: Request) -> Response:
        return JSONResponse(request.app.state.openapi)

    app = Starlette(
        routes=[*routes(), Route("/metrics", metrics), Route("/openapi.json", openapi)],
        middleware=[Middleware(MemoryAwareErrorBoundary, manager=memory)],
        exception_handlers={SixtyError: handle_sixty_error, HTTPException: handle_http_exception},
        lifespan=lifespan,
    )
    return RequestAccounting(app, holder=app)
