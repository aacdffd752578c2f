"""The deal change feed: Postgres LISTEN/NOTIFY -> per-client queues -> server-sent events.

One dedicated connection (never a pooled one: LISTEN is session state) listens on the
``deal_changes`` channel, which a trigger notifies on every committed insert, update and
delete of a deal. Each subscriber's listener filters by owner (admins see all) and puts the
event on its own queue. A subscription is an explicit pair, :meth:`DealFeed.subscribe` and
:meth:`DealFeed.unsubscribe`, and the stream calls both in every profile: the original
removed its realtime channels on unmount (ORIGINAL_SYSTEM.md §2.1, last bullet), so legacy
does not leak them either. The listener is also registered through the client's
memory-manager scope, so with resource tracking a stream that dies without unsubscribing
is still cleaned up. A slow or dead subscriber's queue drops its oldest events instead of
growing without end (in both profiles: nothing in the original corresponds to an unbounded
server-side queue).

If the listening connection dies, it is re-opened with exponential backoff (capped), in a
named background task that :meth:`DealFeed.close` cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from sixty_core.memory import ComponentScope, ListenerRegistry

logger = logging.getLogger(__name__)

CHANNEL = "deal_changes"
DEFAULT_QUEUE_SIZE = 1000
DEFAULT_RECONNECT_MAX_S = 10.0


@dataclass(frozen=True)
class Subscription:
    """One subscriber: the queue its events arrive on, and its listener."""

    queue: asyncio.Queue[dict[str, Any]]
    listener: Callable[[dict[str, Any]], None]


class DealFeed:
    """LISTENs for deal changes and fans them out to subscribers' queues."""

    def __init__(self, dsn: str, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._dsn = dsn
        self._queue_size = queue_size
        self.registry = ListenerRegistry()
        self._conn: asyncpg.Connection | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False
        self.events_received = 0
        self.events_dropped = 0
        self.reconnects = 0

    async def open(self) -> None:
        """Connect and LISTEN. Raises if the database cannot be reached now."""
        await self._connect()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(
            self._dsn,
            timeout=10,
            command_timeout=10,
            server_settings={"application_name": "sixty_feed"},
        )
        await conn.add_listener(CHANNEL, self._on_notify)
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn

    def _on_terminated(self, conn: asyncpg.Connection) -> None:
        if self._closed or self._reconnect_task is not None:
            return
        self._reconnect_task = asyncio.get_running_loop().create_task(
            self._reconnect(), name="sixty-feed-reconnect"
        )

    async def _reconnect(self) -> None:
        delay = 0.1
        try:
            while not self._closed:
                try:
                    await self._connect()
                    self.reconnects += 1
                    return
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, DEFAULT_RECONNECT_MAX_S)
        finally:
            self._reconnect_task = None

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            event = json.loads(payload)
        except ValueError:  # pragma: no cover - the trigger always sends JSON
            return
        self.events_received += 1
        self.registry.notify(event)

    def subscribe(
        self, owner_id: uuid.UUID | None, *, scope: ComponentScope | None
    ) -> Subscription:
        """Start delivering ``owner_id``'s deal changes (None: all) to a new queue.

        The listener is registered through ``scope`` (None registers it directly, as an
        untracked resource only the ``feed_listener_leak`` test fault uses).
        """
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=self._queue_size)
        wanted = str(owner_id) if owner_id is not None else None
        listener = self._listener(queue, wanted)
        if scope is None:
            self.registry.add_listener(listener)
        else:
            scope.add_listener(self.registry, listener)
        return Subscription(queue, listener)

    def unsubscribe(self, subscription: Subscription, *, scope: ComponentScope) -> bool:
        """Stop delivering to ``subscription``; False if it was not registered via ``scope``."""
        return scope.remove_listener(self.registry, subscription.listener)

    def _listener(
        self, queue: asyncio.Queue[dict[str, Any]], wanted: str | None
    ) -> Callable[[dict[str, Any]], None]:
        def listener(event: dict[str, Any]) -> None:
            if wanted is not None and event.get("owner_id") != wanted:
                return
            if queue.full():
                # Bounded: drop the oldest event rather than grow without end.
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self.events_dropped += 1
            queue.put_nowait(event)

        return listener

    def get_stats(self) -> dict[str, Any]:
        return {
            "feed_listeners": len(self.registry),
            "feed_events_received": self.events_received,
            "feed_events_dropped": self.events_dropped,
            "feed_reconnects": self.reconnects,
            "feed_connected": self._conn is not None and not self._conn.is_closed(),
        }

    async def close(self) -> None:
        """Stop listening and close the connection; cancels a pending reconnect."""
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await self._conn.remove_listener(CHANNEL, self._on_notify)
            await self._conn.close(timeout=5)
        self._conn = None
