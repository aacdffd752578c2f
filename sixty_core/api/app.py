"""The Starlette app factory: ``create_app(settings, profile, dsn=..., edge_url=...)``.

The lifespan builds every component for the profile (:mod:`sixty_core.api.components`)
and closes them on shutdown. Layers, outermost first:

1. :class:`~sixty_core.accounting.RequestAccounting` — counts the statements, auth lookups
   and joined cache loads of each request (``X-Sixty-Queries``, ``X-Sixty-Auth-Lookups``,
   ``X-Sixty-Joined-Loads``) and, when it is done, adds them to the per-endpoint totals and
   records the request in the profile's request log and API metrics;
2. the Starlette app (``scope["app"]``, ``app.state``, the lifespan);
3. :class:`~sixty_core.api.boundary.MemoryAwareErrorBoundary` — domain errors and
   Starlette's 404/405 -> mapped statuses (:mod:`sixty_core.api.errors`); any unexpected
   exception becomes a sanitized 500 envelope, and triggers cleanup when memory is high. It
   replaces Starlette's own server-error and exception middleware (:class:`ServiceStarlette`);
4. :class:`~sixty_core.api.routing.IndexedRouter` and its routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sixty_core.accounting import Accounted, RequestAccounting
from sixty_core.api.boundary import ExceptionHandler, MemoryAwareErrorBoundary
from sixty_core.api.components import Components, build
from sixty_core.api.errors import handle_http_exception, handle_sixty_error
from sixty_core.api.metrics import metrics_endpoint
from sixty_core.api.openapi import build_openapi
from sixty_core.api.responses import JSONResponse
from sixty_core.api.routes import COMPONENTS_KEY, routes
from sixty_core.api.routing import IndexedRouter, LeanRoute
from sixty_core.errors import SixtyError
from sixty_core.memory import MemoryManager
from sixty_core.profiles import Profile
from sixty_core.settings import Settings

#: The request log keeps at most this much of a request body per entry.
MAX_LOGGED_BODY = 64 * 1024


def _account() -> Callable[[Accounted], None]:
    """The ``on_done`` of the service's accounting: endpoint totals, log, API metrics."""

    # (method, route path) -> its totals in endpoint_stats, so the key is built once; kept
    # for one Components (a restarted lifespan starts new totals).
    by_route: dict[tuple[str, str], dict[str, int]] = {}
    owner: list[Components | None] = [None]

    def account(done: Accounted) -> None:
        # ServiceStarlette put them in the scope (routes.components); none: not running.
        comp: Components | None = done.scope.get(COMPONENTS_KEY)
        if comp is None:
            return
        if owner[0] is not comp:
            by_route.clear()
            owner[0] = comp
        scope, tally = done.scope, done.tally
        method, path = scope["method"], getattr(scope.get("route"), "path", "unmatched")
        try:
            figures = by_route[method, path]
        except KeyError:
            figures = by_route[method, path] = comp.endpoint_stats.setdefault(
                f"{method} {path}",
                {"requests": 0, "queries": 0, "auth_lookups": 0, "joined_loads": 0},
            )
        figures["requests"] += 1
        figures["queries"] += tally.statements
        figures["auth_lookups"] += tally.auth_lookups
        figures["joined_loads"] += tally.joined_loads
        comp.request_log.record(
            scope["method"], scope["path"], done.status, done.duration_ms, done.body or None
        )
        comp.monitor.record_api(scope["method"], scope["path"], done.status, done.duration_ms)

    return account


class ServiceStarlette(Starlette):
    """Starlette with the service's error boundary as its only middleware.

    Starlette always wraps its router in its server-error middleware and its exception
    middleware, and wraps each function route in the exception layer again; each wraps
    every ``send``. Profiling showed those layers cost more per cached request than the
    router itself, and the boundary already does their job (:mod:`sixty_core.api.boundary`).
    Routes here must be :class:`~sixty_core.api.routing.LeanRoute` (or ASGI apps), whose
    exceptions reach the boundary.
    """

    #: The running app's components, as in ``app.state.components``; None outside the
    #: lifespan.
    components: Components | None = None

    def __init__(
        self,
        routes: list[LeanRoute],
        *,
        memory: MemoryManager,
        handlers: dict[type[Exception], ExceptionHandler],
        lifespan: Callable[[Starlette], Any],
    ) -> None:
        super().__init__(lifespan=lifespan)
        # Same routes, same order, same lifespan: only the lookup of paths changes.
        self.router = IndexedRouter(routes, lifespan=lifespan)
        # The router's own stack (it has no middleware: its app), which Router.__call__
        # would only call in turn.
        self.boundary = MemoryAwareErrorBoundary(
            self.router.middleware_stack, manager=memory, handlers=handlers
        )

    def build_middleware_stack(self) -> ASGIApp:
        return self.boundary

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's __call__, and a running app's components put in the scope, where
        # routes.components and the accounting look (app.state's attribute access is a
        # Python __getattr__, once a request otherwise).
        scope["app"] = self
        if self.components is not None:
            scope[COMPONENTS_KEY] = self.components
        await self.boundary(scope, receive, send)


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
            app.state.components = service.components = comp
            app.state.metrics = metrics_endpoint(comp)
            app.state.openapi = build_openapi(legacy_create="robust_create" not in profile.flags)
            try:
                yield
            finally:
                app.state.components = service.components = None

    async def metrics(request: Request) -> Response:
        endpoint: Any = request.app.state.metrics
        response: Response = await endpoint(request)
        return response

    async def openapi(request: Request) -> Response:
        return JSONResponse(request.app.state.openapi)

    all_routes = [*routes(), LeanRoute("/metrics", metrics), LeanRoute("/openapi.json", openapi)]
    service = ServiceStarlette(
        all_routes,
        memory=memory,
        handlers={SixtyError: handle_sixty_error, HTTPException: handle_http_exception},
        lifespan=lifespan,
    )
    return RequestAccounting(service, on_done=_account(), capture_body=MAX_LOGGED_BODY)
