"""The app's one error layer: known exceptions become their answers, anything else a
sanitized 500, never a trace.

A pure ASGI middleware. If the wrapped app raises before it started a response:

- an exception with a handler (looked up along its class's MRO, as Starlette's exception
  middleware does) gets that handler's response: domain errors and Starlette's own 404/405
  in the envelope (:mod:`sixty_core.api.errors`);
- anything else, or a handler that fails, gets the failure envelope with code
  ``internal_error`` and a fixed message (no exception text, no stack: DESIGN.md section
  4); the traceback goes to the log, and the memory manager counts the error and, when
  memory is above ``normal``, runs its cleanup hooks (subject to their cooldown): the
  original's "memory-aware error boundary", wired in.

If the response already started, the status line is gone, so the exception is re-raised for
the server to abort the connection.

The service runs this in place of Starlette's three layers (its server-error middleware, its
exception middleware and the same exception wrapper again around every route), each of which
wrapped every ``send``: one layer does the same job for a fraction of the cost per request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sixty_core.accounting import RESPONSE_STATUS_KEY
from sixty_core.memory import MemoryManager

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

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


class _WatchedSend:
    """``send``, remembering whether a response has started (after that, an error can only
    abort the connection)."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class MemoryAwareErrorBoundary:
    """Turns an exception in ``app`` into its handler's answer or a sanitized 500 (module
    docstring).

    Only ``http`` scopes are guarded; ``Exception`` subclasses only (cancellation and
    ``KeyboardInterrupt`` pass through). ``handlers`` maps exception classes to
    ``handler(request, exc) -> response``. ``errors_caught`` counts the 500s it sent, as
    does the manager's ``boundary_errors_caught``.
    """

    def __init__(
        self,
        app: ASGIApp,
        manager: MemoryManager,
        handlers: Mapping[type[Exception], ExceptionHandler] | None = None,
    ) -> None:
        self.app = app
        self.manager = manager
        self.handlers = dict(handlers or {})
        self.errors_caught = 0

    def handler_for(self, exc: Exception) -> ExceptionHandler | None:
        """The handler of ``exc``'s class or its nearest base that has one."""
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Inside request accounting, the response's status is in the scope as it starts:
        # no second wrapper of every send (two calls a request) to know whether it did.
        watched = None if RESPONSE_STATUS_KEY in scope else _WatchedSend(send)
        try:
            await self.app(scope, receive, send if watched is None else watched)
        except Exception as exc:
            started = scope[RESPONSE_STATUS_KEY] != 0 if watched is None else watched.started
            if started:
                raise
            handler = self.handler_for(exc)
            if handler is not None and await self._answered(handler, exc, scope, receive, send):
                return
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

    async def _answered(
        self, handler: ExceptionHandler, exc: Exception, scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Send ``handler``'s answer to ``exc``; False if the handler itself failed before
        answering (the caller then sends the 500). A failure after the answer started is
        raised: the connection is aborted."""
        watched = _WatchedSend(send)
        try:
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, watched)
        except Exception:
            if watched.started:
                raise
            logger.exception("the handler of %s failed", type(exc).__name__)
            return False
        # Answered: a reused exception instance would otherwise keep every request's traceback.
        exc.__traceback__ = None
        return True
