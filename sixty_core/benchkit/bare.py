"""The stack's own limits, measured beside the service in the same run.

- :func:`hello_app`: one Starlette route answering constant JSON, no middleware — what any
  request costs before the service does anything;
- :func:`pk_lookup_app`: one Starlette route fetching a deal by primary key through a plain
  asyncpg pool with the optimized profile's pool settings (sizes, the client-side command
  timeout, connection recycling, and a reset that sends nothing) and returning it as JSON —
  what an uncached read costs at the least, with every statement bounded as the service's
  are.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sixty_core.db.pool import OPTIMIZED_POOL

HELLO_BODY = b'{"data":"hello","error":null}'
_encoder = msgspec.json.Encoder()


def hello_app() -> Starlette:
    """``GET /hello`` -> 200 ``{"data":"hello","error":null}``."""

    async def hello(request: Request) -> Response:
        return Response(HELLO_BODY, media_type="application/json")

    return Starlette(routes=[Route("/hello", hello)])


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Send nothing on release (handlers here never change session state)."""


@asynccontextmanager
async def pk_lookup_app(dsn: str) -> AsyncIterator[Starlette]:
    """``GET /deals/{id}`` -> 200 ``{"data": row, "error": null}`` or 404, on its own pool."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=OPTIMIZED_POOL.min_size,
        max_size=OPTIMIZED_POOL.max_size,
        max_queries=OPTIMIZED_POOL.max_queries,
        max_inactive_connection_lifetime=OPTIMIZED_POOL.max_inactive_s,
        command_timeout=OPTIMIZED_POOL.command_timeout_s,
        reset=_no_reset,
    )

    async def deal(request: Request) -> Response:
        try:
            deal_id = uuid.UUID(request.path_params["id"])
        except ValueError:
            return Response(b'{"data":null,"error":"bad id"}', 400)
        row = await pool.fetchrow("SELECT * FROM deals WHERE id = $1", deal_id)
        if row is None:
            return Response(b'{"data":null,"error":"not found"}', 404)
        body = _encoder.encode({"data": dict(row), "error": None})
        return Response(body, media_type="application/json")

    try:
        yield Starlette(routes=[Route("/deals/{id}", deal)])
    finally:
        await pool.close()
