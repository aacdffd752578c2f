"""Call an ASGI app in process: no sockets, no HTTP parser, the same work for every app.

The caller builds the smallest valid HTTP scope, feeds the body in one message and collects
the response. Used to put the service's endpoints beside a bare Starlette app under exactly
the same driver, so the driver's cost cancels out of the ratio.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message

#: Bounded waits of the lifespan protocol: an app that never answers is an error, not a hang.
LIFESPAN_TIMEOUT_S = 60.0


@dataclass
class Reply:
    """One response: status, headers (lower-cased names) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


class AsgiCaller:
    """Sends requests to ``app`` in process and counts the response bytes it received.

    ``bytes_received`` is a running total, so a benchmark can report bytes encoded per call
    as a delta.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.bytes_received = 0
        self.requests = 0

    async def __call__(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        path_only, _, query = path.partition("?")
        raw_headers = [(b"host", b"bench")]
        if body:
            raw_headers.append((b"content-length", str(len(body)).encode()))
            raw_headers.append((b"content-type", b"application/json"))
        for name, value in (headers or {}).items():
            raw_headers.append((name.lower().encode(), value.encode()))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path_only,
            "raw_path": path_only.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent_body = False
        status = 0
        reply_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            # A handler that reads past the body waits for a disconnect that never comes in
            # a real server either; end it rather than hang the benchmark.
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    reply_headers[name.decode("latin-1")] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._app(scope, receive, send)
        data = b"".join(chunks)
        self.requests += 1
        self.bytes_received += len(data)
        return Reply(status, reply_headers, data)


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run ``app``'s lifespan: start-up on entry, shutdown on exit (each bounded).

    Raises RuntimeError with the app's message if start-up or shutdown fails.
    """
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()

    async def receive() -> Message:
        return await to_app.get()

    async def send(message: Message) -> None:
        await from_app.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def run_app() -> None:
        await app(scope, receive, send)

    task = asyncio.create_task(run_app(), name="bench-lifespan")
    await to_app.put({"type": "lifespan.startup"})
    answer = await asyncio.wait_for(from_app.get(), LIFESPAN_TIMEOUT_S)
    if answer["type"] != "lifespan.startup.complete":
        task.cancel()
        raise RuntimeError(f"app start-up failed: {answer.get('message', answer['type'])}")
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        answer = await asyncio.wait_for(from_app.get(), LIFESPAN_TIMEOUT_S)
        await asyncio.wait_for(task, LIFESPAN_TIMEOUT_S)
        if answer["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"app shutdown failed: {answer.get('message', answer['type'])}")
