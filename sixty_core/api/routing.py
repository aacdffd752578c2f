"""Starlette's router with indexes in front of its linear scan, and a leaner route.

Starlette tries every route's regular expression in order until one matches; profiling a
cached ``GET /api/stages`` showed that scan was about a third of the request's time in the
app, because ``/api/stages`` is the tenth route, and ``GET /api/deals/{id}`` paid five
regular expressions before its own. :class:`IndexedRouter` narrows the scan, and never
changes its answer:

- a path is looked up in a dict of the parameter-free routes first. A path is indexed only
  when no earlier route could also match it (so the first route to match is the same one
  Starlette would pick);
- otherwise only the routes that could match at all are tried, in Starlette's order: when
  every parameter of every route stops at a ``/`` (``str``, ``int``, ``float`` and ``uuid``
  convertors do; ``path`` does not), a route can only match paths with as many ``/`` as its
  own and starting with its text before the first parameter.

A route with one ``str`` parameter (``/api/deals/{deal_id}``, ``.../{deal_id}/move``) is
matched by slicing the path, without its regular expression: Starlette's ``Route.matches``
cost 2.9 µs of a 5.2 µs lookup of a deal's route, the slice 0.2 (``timeit``).

Only a full match (path and method) is served from an index: a wrong method, a
trailing-slash redirect, a miss all take Starlette's own scan, unchanged.

:class:`LeanRoute` runs its endpoint without Starlette's per-route exception layer (a
second copy of the one around the whole app): exceptions go up to the app's error boundary,
which maps them with the same handlers (:mod:`sixty_core.api.boundary`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.convertors import (
    Convertor,
    FloatConvertor,
    IntegerConvertor,
    StringConvertor,
    UUIDConvertor,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

#: Convertors whose pattern never matches a ``/``.
_WITHIN_A_SEGMENT: tuple[type[Convertor[Any]], ...] = (
    StringConvertor,
    IntegerConvertor,
    FloatConvertor,
    UUIDConvertor,
)


def static_index(routes: Sequence[BaseRoute]) -> dict[str, list[Route]]:
    """Path -> the parameter-free routes with that exact path, in order, for every path
    that no earlier route (of any kind) could also match."""
    index: dict[str, list[Route]] = {}
    for position, route in enumerate(routes):
        if not isinstance(route, Route) or route.param_convertors:
            continue
        earlier = routes[:position]
        shadowed = any(
            not isinstance(other, Route) or other.path_regex.match(route.path) is not None
            for other in earlier
            if not (isinstance(other, Route) and other.path == route.path)
        )
        if not shadowed:
            index.setdefault(route.path, []).append(route)
    return index


class OneParameter:
    """How a route whose path is ``prefix{name}suffix``, with a ``str`` parameter and no
    other, matches a path of its own depth (same number of ``/``) without its regular
    expression. Its expression is ``^prefix(?P<name>[^/]+)suffix$``; at the same depth the
    parameter cannot hold a ``/``, so a match is the prefix, a non-empty middle and the
    suffix. One difference is left to the expression: ``$`` also matches before a final
    newline, so a path ending in ``\n`` must not be decided here (the router checks)."""

    __slots__ = ("_shortest", "name", "prefix", "suffix")

    def __init__(self, name: str, prefix: str, suffix: str) -> None:
        self.name = name
        self.prefix = prefix
        self.suffix = suffix
        self._shortest = len(prefix) + len(suffix) + 1

    @classmethod
    def of(cls, route: Route) -> OneParameter | None:
        """The slicing for ``route``; None when its path has another shape."""
        if len(route.param_convertors) != 1:
            return None
        ((name, convertor),) = route.param_convertors.items()
        if type(convertor) is not StringConvertor:
            return None
        prefix, _, rest = route.path.partition("{")
        placeholder, _, suffix = rest.partition("}")
        if placeholder not in (name, f"{name}:str") or "{" in suffix:
            return None
        return cls(name, prefix, suffix)

    def value(self, path: str) -> str | None:
        """The parameter, for a path of the route's depth that starts with the prefix and
        does not end in a newline; None when the path does not match."""
        if len(path) < self._shortest or not path.endswith(self.suffix):
            return None
        return path[len(self.prefix) : len(path) - len(self.suffix)]


def depth_index(routes: Sequence[BaseRoute]) -> dict[int, list[tuple[str, Route]]] | None:
    """Number of ``/`` -> (text before the first parameter, route) for every route with
    that many, in order; None when some route could match across a ``/`` (a mount, a
    ``path`` convertor), since then the depth says nothing."""
    index: dict[int, list[tuple[str, Route]]] = {}
    for route in routes:
        if not isinstance(route, Route) or not all(
            type(convertor) in _WITHIN_A_SEGMENT for convertor in route.param_convertors.values()
        ):
            return None
        prefix = route.path.partition("{")[0]
        index.setdefault(route.path.count("/"), []).append((prefix, route))
    return index


class IndexedRouter(Router):
    """A :class:`~starlette.routing.Router` that narrows its scan (module docstring)."""

    def __init__(self, routes: Sequence[BaseRoute], **kwargs: object) -> None:
        super().__init__(list(routes), **kwargs)  # type: ignore[arg-type]
        self._static = static_index(self.routes)
        by_depth = depth_index(self.routes)
        # Beside each route, its slicing when it has one.
        self._by_depth = (
            None
            if by_depth is None
            else {
                depth: [(prefix, route, OneParameter.of(route)) for prefix, route in entries]
                for depth, entries in by_depth.items()
            }
        )

    def _full_match(self, scope: Scope) -> Route | None:
        path: str = scope["path"]
        method = scope["method"]
        for route in self._static.get(path, ()):
            # The path is the route's own text, so its expression would match with no
            # parameters: what Route.matches returns then, without running it.
            if route.methods is None or method in route.methods:
                scope["endpoint"] = route.endpoint
                scope["path_params"] = dict(scope.get("path_params", {}))
                return route
        if self._by_depth is None:
            return None
        # A final newline is left to the expressions (OneParameter).
        sliceable = not path.endswith("\n")
        for prefix, route, sliced in self._by_depth.get(path.count("/"), ()):
            if not path.startswith(prefix):
                continue
            if sliced is not None and sliceable:
                value = sliced.value(path)
                if value is None or (route.methods and method not in route.methods):
                    continue
                # What Route.matches puts in the scope on a full match (a str parameter
                # converts to itself).
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {**scope.get("path_params", {}), sliced.name: value}
                return route
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                return route
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self._full_match(scope)
            if route is not None:
                scope.setdefault("router", self)
                scope["route"] = route
                # Route.handle would only check the method again (a full match has one the
                # route takes) before calling route.app: one call less per request.
                await route.app(scope, receive, send)
                return
        await super().app(scope, receive, send)


def lean_endpoint(endpoint: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    """``endpoint(request) -> response`` as an ASGI app, exceptions left to the caller."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


class LeanRoute(Route):
    """A :class:`~starlette.routing.Route` for an async ``endpoint(request)`` whose
    exceptions reach the app's error boundary directly (module docstring)."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        methods: Sequence[str] | None = None,
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.app = lean_endpoint(endpoint)
