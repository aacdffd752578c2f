"""Server-sent events for ``GET /api/deals/stream``: one memory-manager scope per client.

:func:`open_stream` runs in the route, before the response starts, so a refusal is a real
status (429 past the per-user cap): it opens the client's scope, subscribes it to the feed
and registers the stream under its token. :func:`events` then yields frames until the
client disconnects, ``max_events`` were sent, the token is logged out (the stream's queue
is woken at once) or the session expires (a timer at its expiry). A stream ended by the
server says why in a last ``event: end`` frame. However it ends, the feed listener is
removed (in every profile: the original removed its realtime channels on unmount) and the
scope closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sixty_core.api.components import Components
from sixty_core.api.responses import encode
from sixty_core.auth import User
from sixty_core.feed import Subscription
from sixty_core.memory import ComponentScope
from sixty_core.streams import END, StreamTicket

KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class OpenStream:
    """What one client's stream holds, released together when it ends."""

    scope: ComponentScope
    subscription: Subscription
    ticket: StreamTicket


async def open_stream(comp: Components, user: User, token_hash: str) -> OpenStream:
    """Subscribe ``user`` to the feed and register the stream; 429 past the per-user cap."""
    leak = comp.faults.feed_listener_leak
    scope = comp.memory.open_scope("feed_client")
    subscription = comp.feed.subscribe(user.visible_owner, scope=None if leak else scope)
    try:
        ticket = comp.streams.open(token_hash, user.id, user.expires_at, subscription.queue)
    except BaseException:
        _release(comp, scope, subscription)
        await scope.close()
        raise
    return OpenStream(scope, subscription, ticket)


async def events(
    comp: Components,
    stream: OpenStream,
    *,
    max_events: int | None,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """Yield SSE frames of the caller's deal changes until the stream ends (module
    docstring). A comment frame every 15 s keeps proxies and clients from timing out."""
    ticket, queue = stream.ticket, stream.subscription.queue
    sent = 0
    try:
        yield b"retry: 2000\n: connected\n\n"
        while max_events is None or sent < max_events:
            left_s = ticket.seconds_left(comp.streams.now())
            if left_s <= 0:
                ticket.ended = ticket.ended or "session expired"
                break
            try:
                async with asyncio.timeout(min(KEEPALIVE_S, left_s)):
                    event = await queue.get()
            except TimeoutError:
                if await is_disconnected():
                    break
                yield b": keepalive\n\n"
                continue
            if event is END or ticket.ended is not None:
                break
            sent += 1
            yield b"event: deal\ndata: " + encode(event) + b"\n\n"
        if ticket.ended is not None:
            yield b"event: end\ndata: " + encode({"reason": ticket.ended}) + b"\n\n"
    finally:
        comp.streams.close(ticket)
        with contextlib.suppress(Exception):
            await asyncio.shield(_close(comp, stream))


async def _close(comp: Components, stream: OpenStream) -> None:
    _release(comp, stream.scope, stream.subscription)
    await stream.scope.close()


def _release(comp: Components, scope: ComponentScope, subscription: Subscription) -> None:
    if not comp.faults.feed_listener_leak:
        comp.feed.unsubscribe(subscription, scope=scope)
