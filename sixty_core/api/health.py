"""``GET /api/health`` in the original's shape (``?detailed=true`` adds pool, cache, memory).

The plain check is for anyone (load balancers, the harness): one ``SELECT now()`` round
trip, status and response time, no versions, no counts. The detail (exact Postgres and
Python versions, pool sizes, profile flags, tenant-wide row counts from ``count(*)``
scans) is for admins only: it needs an admin's bearer token (401 without one, 403 for a
non-admin), and it is computed at most once a second however many callers ask, so it
cannot be used to load the database. A failed database probe answers 503 with
``status: "unhealthy"`` and a sanitized reason; no database text is echoed.
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from typing import Any

import psutil
from starlette.requests import Request
from starlette.responses import Response

from sixty_core import __version__
from sixty_core.api.components import Components
from sixty_core.api.responses import JSONResponse
from sixty_core.errors import ForbiddenError, SixtyError


async def health(request: Request) -> Response:
    comp: Components = request.app.state.components
    detailed = request.query_params.get("detailed", "false").lower() in ("1", "true", "yes")
    if detailed:
        user, _ = await comp.authenticate(request.headers.get("authorization"))
        if not user.is_admin:
            raise ForbiddenError("detailed health is for admins; the plain check is open")
    api = {
        "version": __version__,
        "environment": "local",
        "region": "loopback",
        "deployment": comp.profile.name,
        "profile": comp.profile.name,
    }
    started = time.perf_counter()
    try:
        probe = await comp.repository.health_probe()
    except SixtyError as exc:
        unhealthy = {
            "status": "unhealthy",
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "database": {"connected": False, "error": str(exc), "response_time": "timeout"},
            "api": api,
        }
        return JSONResponse(
            {"data": unhealthy, "error": {"code": "database_unavailable", "message": str(exc)}},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    elapsed_ms = (time.perf_counter() - started) * 1000
    body: dict[str, Any] = {
        "status": "healthy",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "database": {
            "connected": True,
            "response_time": f"{elapsed_ms:.0f}ms",
            "server_time": probe["now"],
        },
        "api": api,
    }
    if detailed:
        detail = await comp.health_detail.get(lambda: _detail(comp))
        body["database"] = {**body["database"], **detail["database"]}
        body["api"] = {**api, "flags": comp.profile.as_dict()}
        body["cache"] = detail["cache"]
        body["system"] = detail["system"]
        body["detail_computed_at"] = detail["computed_at"]
    return JSONResponse({"data": body, "error": None})


async def _detail(comp: Components) -> dict[str, Any]:
    """What only admins see; the caller caches it for about a second."""
    cache = comp.cache.get_stats()
    memory = comp.memory.get_stats()
    return {
        "database": {
            "version": await comp.repository.server_version(),
            "pool": comp.pool.health_snapshot(),
            "tables": await comp.repository.table_counts(),
        },
        "cache": {
            "hit_rate": round(cache["cache_hit_rate"], 4),
            "total_hits": cache["cache_hits"],
            "total_misses": cache["cache_misses"],
            "entries": cache["cache_entries"],
            "max_entries": sum(n["maxsize"] for n in cache["namespaces"].values()),
            "evictions": cache["cache_evictions"],
        },
        "system": {
            # The original's used/total/usage_mb, from the process RSS and the machine's
            # memory; Node's "external" has no CPython counterpart and is left out.
            "memory": {
                "used": round(memory["rss_mb"], 1),
                "total": round(psutil.virtual_memory().total / 2**20, 1),
                "usage_mb": round(memory["rss_mb"], 1),
                "rss_mb": memory["rss_mb"],
                "peak_rss_mb": memory["peak_rss_mb"],
                "level": memory["level"],
                "trend": memory["trend"],
            },
            "uptime": f"{time.monotonic() - comp.started_at:.0f}s",
            "python_version": platform.python_version(),
        },
        "computed_at": dt.datetime.now(dt.UTC).isoformat(),
    }
