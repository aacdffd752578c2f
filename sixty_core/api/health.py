"""``GET /api/health`` in the original's shape (``?detailed=true`` adds pool, cache, memory).

Unauthenticated, like the original. A failed database probe answers 503 with
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
from sixty_core.errors import SixtyError


async def health(request: Request) -> Response:
    comp: Components = request.app.state.components
    detailed = request.query_params.get("detailed", "false").lower() in ("1", "true", "yes")
    api = {
        "version": __version__,
        "environment": "local",
        "region": "loopback",
        "deployment": comp.profile.name,
        "profile": comp.profile.name,
        "flags": comp.profile.as_dict(),
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
    database: dict[str, Any] = {
        "connected": True,
        "version": probe["version"],
        "response_time": f"{elapsed_ms:.0f}ms",
        "server_time": probe["now"],
    }
    body: dict[str, Any] = {
        "status": "healthy",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "database": database,
        "api": api,
    }
    if detailed:
        database["pool"] = comp.pool.health_snapshot()
        database["tables"] = await comp.repository.table_counts()
        cache = comp.cache.get_stats()
        body["cache"] = {
            "hit_rate": round(cache["cache_hit_rate"], 4),
            "total_hits": cache["cache_hits"],
            "total_misses": cache["cache_misses"],
            "entries": cache["cache_entries"],
            "max_entries": sum(n["maxsize"] for n in cache["namespaces"].values()),
            "evictions": cache["cache_evictions"],
        }
        memory = comp.memory.get_stats()
        body["system"] = {
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
        }
    return JSONResponse({"data": body, "error": None})
