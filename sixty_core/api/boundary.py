"""The last line of defence: an unexpected exception becomes a sanitized 500, never a trace.

A pure ASGI middleware (no framework needed). If the wrapped app raises before it started a
response, the client gets the failure envelope with code ``internal_error`` and a fixed
message (no exception text, no stack: DESIGN.md section 4), the traceback goes to the log,
and the memory manager counts the error and, when memory is above ``normal``, runs its
cleanup hooks (subject to their cooldown): the original's "memory-aware error boundary",
wired in. If the response already started, the status line is gone, so the exception is
re-raised for the server to abort the connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sixty_core.memory import MemoryManager

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INTERNAL_ERROR_BODY = json.dumps(
    {
        "data": None,
        "error": {
            "code": "internal_error",
            "message": "internal error; the request was not completed",
        },
    },
    separators=(",", ":"),
).encode()


class MemoryAwareErrorBoundary:
    """Turns an unhandled exception in ``app`` into a sanitized 500 (module docstring).

    Only ``http`` scopes are guarded; ``Exception`` subclasses only (cancellation and
    ``KeyboardInterrupt`` pass through). ``errors_caught`` counts the 500s it sent, as does
    the manager's ``boundary_errors_caught``.
    """

    def __init__(self, app: ASGIApp, manager: MemoryManager) -> None:
        self.app = app
        self.manager = manager
        self.errors_caught = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        except Exception:
            if started:
                raise
            logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            self.errors_caught += 1
            self.manager.record_unhandled_error()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(INTERNAL_ERROR_BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": INTERNAL_ERROR_BODY})
