"""The endpoints of DESIGN.md section 4. Thin: parse, authenticate, call the service,
answer in the envelope. No SQL and no profile logic here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from sixty_core.api import health, sse
from sixty_core.api.components import Components
from sixty_core.api.params import (
    list_query_from,
    parse_int,
    parse_text,
    parse_uuid,
    require_uuid,
)
from sixty_core.api.responses import JSONResponse, ok
from sixty_core.api.routing import LeanRoute
from sixty_core.auth import User
from sixty_core.errors import ClientDisconnectedError, RequestTimeoutError, ValidationError
from sixty_core.models import BulkRequest, DealCreate, DealUpdate, MoveRequest

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
#: The service prefixes the caller's id (37 chars); the edge takes keys of up to 200.
MAX_IDEMPOTENCY_KEY = 128
T = TypeVar("T")

Handler = Callable[[Request, User], Awaitable[Response]]


#: Where :func:`components` remembers the running app's components in a request's scope.
COMPONENTS_KEY = "sixty.components"


def components(request: Request) -> Components:
    """The running app's components, looked up once per request (``app.state`` attribute
    access goes through a Python ``__getattr__``; handlers ask for them twice, and the
    accounting once more)."""
    scope = request.scope
    comp: Components | None = scope.get(COMPONENTS_KEY)
    if comp is None:  # the first ask of the request (a get: a KeyError costs more)
        comp = scope[COMPONENTS_KEY] = scope["app"].state.components
    return comp


async def decode_body(request: Request, kind: type[T]) -> T:
    """Decode the JSON body as ``kind``: 400 when too large, with msgspec's precise message
    (field path, expected type) when malformed; 408 when the body does not arrive within
    ``body_read_timeout_s`` (a ``Content-Length`` larger than what is sent would otherwise
    hold the connection forever). A client that hangs up mid-body is counted and logged in
    one line, and the request ends without an answer nobody would read."""
    comp = components(request)
    body = bytearray()
    timeout_s = comp.settings.body_read_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise ValidationError(f"request body is larger than {MAX_BODY_BYTES} bytes")
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {timeout_s:g} s "
            f"({len(body)} bytes received): send the whole body, or a correct Content-Length"
        ) from None
    except ClientDisconnect:
        comp.client_disconnects += 1
        logger.info(
            "client disconnected while sending %s %s (%d bytes received)",
            request.method,
            request.url.path,
            len(body),
        )
        raise ClientDisconnectedError("the client disconnected while sending its body") from None
    if not body:
        raise ValidationError("request body is empty: send a JSON object")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError:
        raise ValidationError("request body is not valid JSON") from None


#: Where :func:`authenticated` leaves the caller's token hash for the handler.
TOKEN_HASH_KEY = "sixty.token_hash"


def authorization(request: Request) -> str | None:
    """The first ``Authorization`` header, as ``request.headers.get`` would return it.

    Read from the raw ASGI headers (their names arrive lower-cased): Starlette's ``Headers``
    decodes every header name to find one, on every authenticated request."""
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``handler`` so it runs only for a valid bearer token (401 otherwise); the
    token's hash is in ``request.scope[TOKEN_HASH_KEY]``."""

    async def endpoint(request: Request) -> Response:
        user, request.scope[TOKEN_HASH_KEY] = await components(request).authenticate(
            authorization(request)
        )
        return await handler(request, user)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


@authenticated
async def list_deals(request: Request, user: User) -> Response:
    query = list_query_from(request.scope["query_string"], user.visible_owner)
    page = await components(request).service.list_deals(user, query)
    return ok(page.deals, count=len(page.deals), next_cursor=page.next_cursor)


@authenticated
async def create_deal(request: Request, user: User) -> Response:
    body = await decode_body(request, DealCreate)
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise ValidationError(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable chars")
    created = await components(request).service.create_deal(user, body, idempotency_key=key)
    headers = {}
    if created.degraded:
        headers["X-Sixty-Degraded"] = "edge-fallback"
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    if created.legacy_envelope:
        # The original's broken contract, reproduced on purpose (see ORIGINAL_SYSTEM 3.6).
        return JSONResponse(
            {"data": {"data": created.deal}, "error": "Deal created successfully"},
            status_code=201,
            headers=headers,
        )
    return ok(created.deal, status=201, headers=headers)


@authenticated
async def get_deal(request: Request, user: User) -> Response:
    deal_id = require_uuid(request.path_params["deal_id"], "deal id")
    return ok(await components(request).service.get_deal(user, deal_id))


@authenticated
async def update_deal(request: Request, user: User) -> Response:
    deal_id = require_uuid(request.path_params["deal_id"], "deal id")
    body = await decode_body(request, DealUpdate)
    return ok(await components(request).service.update_deal(user, deal_id, body))


@authenticated
async def delete_deal(request: Request, user: User) -> Response:
    deal_id = require_uuid(request.path_params["deal_id"], "deal id")
    return ok(await components(request).service.delete_deal(user, deal_id))


@authenticated
async def move_deal(request: Request, user: User) -> Response:
    deal_id = require_uuid(request.path_params["deal_id"], "deal id")
    body = await decode_body(request, MoveRequest)
    return ok(await components(request).service.move_deal(user, deal_id, body.stage_id))


@authenticated
async def bulk(request: Request, user: User) -> Response:
    body = await decode_body(request, BulkRequest)
    return ok(await components(request).service.bulk(user, body))


@authenticated
async def pipeline_stats(request: Request, user: User) -> Response:
    owner = parse_uuid(request.query_params.get("owner_id"), "owner_id")
    return ok(await components(request).service.pipeline_stats(user, owner))


@authenticated
async def stages(request: Request, user: User) -> Response:
    rows = await components(request).service.stages()
    return ok(rows, count=len(rows))


@authenticated
async def owners(request: Request, user: User) -> Response:
    rows = await components(request).service.owners()
    return ok(rows, count=len(rows))


@authenticated
async def companies(request: Request, user: User) -> Response:
    search = parse_text(request.query_params, "search", 200)
    limit = parse_int(request.query_params, "limit", default=50, low=1, high=500)
    rows = await components(request).service.companies(search=search, limit=limit)
    return ok(rows, count=len(rows))


async def logout(request: Request) -> Response:
    """Revoke the caller's token at once (the cache entry too) and end its open streams."""
    comp = components(request)
    _, token_hash = await comp.authenticate(authorization(request))
    revoked = await comp.auth.logout(token_hash)
    comp.streams.end_token(token_hash, "logged out")
    await comp.monitor.on_logout(token_hash)
    return ok({"revoked": revoked})


@authenticated
async def stream(request: Request, user: User) -> Response:
    max_events = parse_int(request.query_params, "max_events", default=0, low=0, high=100_000)
    comp = components(request)
    opened = await sse.open_stream(comp, user, request.scope[TOKEN_HASH_KEY])
    return StreamingResponse(
        sse.events(
            comp,
            opened,
            max_events=max_events or None,
            is_disconnected=request.is_disconnected,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def routes() -> list[LeanRoute]:
    return [
        LeanRoute("/api/deals", list_deals, methods=["GET"]),
        LeanRoute("/api/deals", create_deal, methods=["POST"]),
        LeanRoute("/api/deals/pipeline-stats", pipeline_stats, methods=["GET"]),
        LeanRoute("/api/deals/stream", stream, methods=["GET"]),
        LeanRoute("/api/deals/bulk", bulk, methods=["POST"]),
        LeanRoute("/api/deals/{deal_id}", get_deal, methods=["GET"]),
        LeanRoute("/api/deals/{deal_id}", update_deal, methods=["PATCH"]),
        LeanRoute("/api/deals/{deal_id}", delete_deal, methods=["DELETE"]),
        LeanRoute("/api/deals/{deal_id}/move", move_deal, methods=["POST"]),
        LeanRoute("/api/stages", stages, methods=["GET"]),
        LeanRoute("/api/owners", owners, methods=["GET"]),
        LeanRoute("/api/companies", companies, methods=["GET"]),
        LeanRoute("/api/auth/logout", logout, methods=["POST"]),
        LeanRoute("/api/health", health.health, methods=["GET"]),
    ]
