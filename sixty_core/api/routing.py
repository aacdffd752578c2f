"""Starlette's router with an exact-path index in front of its linear scan.

Starlette tries every route's regular expression in order until one matches; profiling a
cached ``GET /api/stages`` showed that scan was about a third of the request's time in the
app, because ``/api/stages`` is the tenth route. :class:`IndexedRouter` looks a request's
path up in a dict of the parameter-free routes first. A path is indexed only when no earlier
route could also match it (so the first route to match is the same one Starlette would
pick), and only a full match (path and method) is served from the index: a wrong method, a
path with parameters, a trailing-slash redirect all take Starlette's own scan, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send


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


class IndexedRouter(Router):
    """A :class:`~starlette.routing.Router` that serves exact static paths from a dict."""

    def __init__(self, routes: Sequence[BaseRoute], **kwargs: object) -> None:
        super().__init__(list(routes), **kwargs)  # type: ignore[arg-type]
        self._static = static_index(self.routes)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            for route in self._static.get(scope["path"], ()):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)
