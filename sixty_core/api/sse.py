"""Server-sent events for ``GET /api/deals/stream``: one memory-manager scope per client.

The scope owns the client's feed listener. When the client goes away the scope is closed:
with resource tracking that removes the listener; in the legacy profile it does not, and
the dead client's listener keeps receiving (and queueing) every change — the original leak.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from sixty_core.api.components import Components
from sixty_core.api.responses import encode
from sixty_core.auth import User

KEEPALIVE_S = 15.0


async def events(
    comp: Components,
    user: User,
    *,
    max_events: int | None,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """Yield SSE frames of the caller's deal changes until they disconnect (or, with
    ``max_events``, after that many events). A comment frame every 15 s keeps proxies and
    clients from timing the stream out."""
    scope = comp.memory.open_scope("feed_client")
    queue = comp.feed.subscribe(scope, user.visible_owner)
    sent = 0
    try:
        yield b"retry: 2000\n: connected\n\n"
        while max_events is None or sent < max_events:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    event = await queue.get()
            except TimeoutError:
                if await is_disconnected():
                    break
                yield b": keepalive\n\n"
                continue
            sent += 1
            yield b"event: deal\ndata: " + encode(event) + b"\n\n"
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(scope.close())
