"""Per-request accounting as pure ASGI middleware: statements in, counts out in headers.

:class:`RequestAccounting` opens a :class:`~sixty_core.db.recorder.Tally` for each HTTP
request and answers with what that request cost:

===================== ===================================================================
``X-Sixty-Queries``   statements sent to Postgres on this request's behalf, counted on the
                      connection (BEGIN/COMMIT and the pool's reset included), plus those
                      the edge upstream reported for it
``X-Sixty-Auth-Lookups`` session/user lookups made (each one costs statements above)
``X-Sixty-Joined-Loads`` cache loads this request waited for instead of running: their
                      statements are counted for the request that started them
===================== ===================================================================

The headers are written when the response starts (a handler's connections are back by then,
and a lease counts its statements when it ends); the response's status is then in the scope
under :data:`RESPONSE_STATUS_KEY` (the error boundary reads it). When the request is done,
the optional ``on_done`` callback gets the final tally, for per-endpoint totals and the
request log.
Used by the deal service and by the edge upstream alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sixty_core.db.recorder import Tally, recording

QUERIES_HEADER = b"x-sixty-queries"
AUTH_LOOKUPS_HEADER = b"x-sixty-auth-lookups"
JOINED_LOADS_HEADER = b"x-sixty-joined-loads"

#: Where :class:`RequestAccounting` keeps, in the request's scope, the status of the
#: response it forwarded: 0 until the response starts. A layer inside it that must know
#: whether the response started reads it here instead of wrapping ``send`` again.
RESPONSE_STATUS_KEY = "sixty.response_status"


#: Counts below this have their header bytes made once.
SMALL_COUNT = 64
_SMALL_NUMBERS = tuple(str(n).encode() for n in range(SMALL_COUNT))


def _number(n: int) -> bytes:
    """``n`` as header bytes (the common small counts are made once)."""
    return _SMALL_NUMBERS[n] if 0 <= n < SMALL_COUNT else str(n).encode()


def _count_headers(tally: Tally) -> tuple[tuple[bytes, bytes], ...]:
    """The three count headers of ``tally``; one call per request where the counts are
    small (a call to :func:`_number` per header was three)."""
    queries, lookups, joins = tally.statements, tally.auth_lookups, tally.joined_loads
    small = _SMALL_NUMBERS
    if 0 <= queries < SMALL_COUNT and 0 <= lookups < SMALL_COUNT and 0 <= joins < SMALL_COUNT:
        return (
            (QUERIES_HEADER, small[queries]),
            (AUTH_LOOKUPS_HEADER, small[lookups]),
            (JOINED_LOADS_HEADER, small[joins]),
        )
    return (
        (QUERIES_HEADER, _number(queries)),
        (AUTH_LOOKUPS_HEADER, _number(lookups)),
        (JOINED_LOADS_HEADER, _number(joins)),
    )


@dataclass(slots=True)
class Accounted:
    """One finished request as ``on_done`` sees it (not to be changed: not frozen only
    because a frozen dataclass's ``__init__`` costs a microsecond more, every request)."""

    scope: Scope
    status: int
    tally: Tally
    duration_ms: float
    body: bytes


class RequestAccounting:
    """Pure ASGI middleware: count each request's statements and answer them in headers.

    ``capture_body`` keeps up to that many bytes of the request body for ``on_done``
    (0 keeps none).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        on_done: Callable[[Accounted], None] | None = None,
        capture_body: int = 0,
    ) -> None:
        self.app = app
        self._on_done = on_done
        self._capture = capture_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope[RESPONSE_STATUS_KEY] = 0
        body = bytearray()
        capture = self._capture

        async def receive_captured() -> Message:
            message = await receive()
            if capture and message["type"] == "http.request" and len(body) < capture:
                body.extend(message.get("body", b"")[: capture - len(body)])
            return message

        with recording() as tally:

            async def send_counted(message: Message) -> None:
                if message["type"] == "http.response.start":
                    scope[RESPONSE_STATUS_KEY] = message["status"]
                    message = {
                        **message,
                        "headers": [*message.get("headers", ()), *_count_headers(tally)],
                    }
                await send(message)

            try:
                await self.app(scope, receive_captured if capture else receive, send_counted)
            finally:
                if self._on_done is not None:
                    duration_ms = (time.perf_counter() - started) * 1000
                    status = scope[RESPONSE_STATUS_KEY]
                    self._on_done(Accounted(scope, status, tally, duration_ms, bytes(body)))
