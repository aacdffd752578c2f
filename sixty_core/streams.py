"""Open event streams per token and per user: a cap, and an end when the token ends.

A server-sent event stream authenticates once, when it opens. Without this registry it
would outlive its token: after a logout the token gets 401 on every new request, yet an
open ``/api/deals/stream`` kept delivering events. :class:`OpenStreams` knows every open
stream by token hash and by user:

- :meth:`OpenStreams.open` refuses an 11th concurrent stream of one user
  (:class:`~sixty_core.errors.TooManyRequestsError`, 429);
- :meth:`OpenStreams.end_token` (called by logout) ends every stream of that token: the
  stream's next wait wakes at once, says why in a last ``end`` event, and closes;
- a stream also ends by itself when its session expires (:meth:`StreamTicket.seconds_left`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sixty_core.errors import TooManyRequestsError

DEFAULT_MAX_STREAMS_PER_USER = 10

#: Put on a stream's queue to wake it when it must end.
END = object()

K = TypeVar("K", bound=Hashable)


class StreamTicket:
    """One open stream: its queue, its token and why it ended (None while it may go on)."""

    __slots__ = ("ended", "expires_at", "queue", "token_hash", "user_id")

    def __init__(
        self,
        token_hash: str,
        user_id: uuid.UUID,
        expires_at: dt.datetime,
        queue: asyncio.Queue[Any],
    ) -> None:
        self.token_hash = token_hash
        self.user_id = user_id
        self.expires_at = expires_at
        self.queue = queue
        self.ended: str | None = None

    def seconds_left(self, now: dt.datetime) -> float:
        """Seconds until the session expires (<= 0 once it has)."""
        return (self.expires_at - now).total_seconds()

    def end(self, reason: str) -> None:
        """Mark the stream ended and wake its reader (the queue may be full: make room)."""
        if self.ended is None:
            self.ended = reason
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(END)


class OpenStreams:
    """Every open stream, by token hash and by user."""

    def __init__(
        self,
        *,
        max_per_user: int = DEFAULT_MAX_STREAMS_PER_USER,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if max_per_user < 1:
            raise ValueError(f"max_per_user must be >= 1, got {max_per_user}")
        self._max = max_per_user
        self.now = now or (lambda: dt.datetime.now(dt.UTC))
        self._by_token: defaultdict[str, set[StreamTicket]] = defaultdict(set)
        self._by_user: defaultdict[uuid.UUID, set[StreamTicket]] = defaultdict(set)
        self.refused = 0
        self.ended_by_logout = 0

    def open(
        self,
        token_hash: str,
        user_id: uuid.UUID,
        expires_at: dt.datetime,
        queue: asyncio.Queue[Any],
    ) -> StreamTicket:
        """Register a stream; TooManyRequestsError if the user already has the maximum."""
        if len(self._by_user[user_id]) >= self._max:
            self.refused += 1
            raise TooManyRequestsError(
                f"too many open event streams: at most {self._max} per user; "
                "close one before opening another",
                retry_after_s=5.0,
            )
        ticket = StreamTicket(token_hash, user_id, expires_at, queue)
        self._by_token[token_hash].add(ticket)
        self._by_user[user_id].add(ticket)
        return ticket

    def close(self, ticket: StreamTicket) -> None:
        """Forget a stream (idempotent)."""
        _discard(self._by_token, ticket.token_hash, ticket)
        _discard(self._by_user, ticket.user_id, ticket)

    def end_token(self, token_hash: str, reason: str) -> int:
        """End every open stream of ``token_hash``; return how many."""
        tickets = list(self._by_token.get(token_hash, ()))
        for ticket in tickets:
            ticket.end(reason)
        self.ended_by_logout += len(tickets)
        return len(tickets)

    @property
    def open_count(self) -> int:
        return sum(len(t) for t in self._by_token.values())

    def get_stats(self) -> dict[str, int]:
        return {
            "streams_open": self.open_count,
            "streams_refused": self.refused,
            "streams_ended_by_logout": self.ended_by_logout,
        }


def _discard(index: defaultdict[K, set[StreamTicket]], key: K, ticket: StreamTicket) -> None:
    tickets = index.get(key)
    if tickets is not None:
        tickets.discard(ticket)
        if not tickets:
            del index[key]
