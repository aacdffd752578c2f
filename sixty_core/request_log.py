"""Request logs: what the service keeps of every request it served.

The legacy profile keeps every request with its whole body, forever: the original logged
full payloads (``console.log``), and the logs kept those objects alive (ORIGINAL_SYSTEM.md
§2.1 "Leaks and lifecycle"). The optimized profile keeps the last ``maxlen`` requests as
small summaries (the body's size, not the body).
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass
from typing import Protocol

DEFAULT_REQUEST_LOG_MAXLEN = 1000


class RequestLog(Protocol):
    """Where the API records each request it served."""

    def record(
        self, method: str, path: str, status: int, duration_ms: float, payload: bytes | None
    ) -> None: ...

    def __len__(self) -> int: ...

    def retained_bytes(self) -> int:
        """Estimated bytes the log keeps alive (``sys.getsizeof`` of entries and fields)."""
        ...


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """A request as the legacy log keeps it: with its whole payload."""

    method: str
    path: str
    status: int
    duration_ms: float
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """A request as the bounded log gives it back: the payload's size, not the payload."""

    method: str
    path: str
    status: int
    duration_ms: float
    payload_bytes: int


def _entry_size(entry: LoggedRequest | RequestSummary) -> int:
    # Shallow sizes of the entry and the fields it alone keeps alive; ints, floats and
    # interned method strings are shared, so counting them would overstate.
    size = sys.getsizeof(entry) + sys.getsizeof(entry.path)
    if isinstance(entry, LoggedRequest) and entry.payload is not None:
        size += sys.getsizeof(entry.payload)
    return size


class UnboundedRequestLog:
    """The legacy request log: every request with its whole payload, forever (the leak)."""

    def __init__(self) -> None:
        self._entries: list[LoggedRequest] = []
        self._bytes = 0

    def record(
        self, method: str, path: str, status: int, duration_ms: float, payload: bytes | None
    ) -> None:
        entry = LoggedRequest(method, path, status, duration_ms, payload)
        self._entries.append(entry)
        self._bytes += _entry_size(entry)

    def __len__(self) -> int:
        return len(self._entries)

    def retained_bytes(self) -> int:
        return self._bytes


#: Shallow size of one kept summary row (a 5-tuple, see :class:`BoundedRequestLog`); a row
#: counts this and its path, which it alone keeps alive, as _entry_size counts.
_SUMMARY_ROW_BYTES = sys.getsizeof((None,) * 5)


class BoundedRequestLog:
    """The last ``maxlen`` requests as small summaries; older ones fall off.

    A summary is kept as a plain tuple of :class:`RequestSummary`'s fields and turned into
    one only when read: the log records every request, and a tuple costs a fraction of a
    frozen dataclass (``record`` on a full log, with ``timeit``: 2.0-2.2 µs with a
    dataclass per entry, 0.75 µs with a tuple). The size of a leaving row is computed again
    rather than kept in it: 0.25 µs more per request, and the row stays exactly the
    summary's fields.
    """

    def __init__(self, *, maxlen: int = DEFAULT_REQUEST_LOG_MAXLEN) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        self._entries: deque[tuple[str, str, int, float, int]] = deque(maxlen=maxlen)
        self._bytes = 0

    def record(
        self, method: str, path: str, status: int, duration_ms: float, payload: bytes | None
    ) -> None:
        entries = self._entries
        if len(entries) == entries.maxlen:
            # The leftmost row falls off; rows are all one size, so only the paths differ.
            self._bytes += sys.getsizeof(path) - sys.getsizeof(entries[0][1])
        else:
            self._bytes += _SUMMARY_ROW_BYTES + sys.getsizeof(path)
        payload_bytes = len(payload) if payload is not None else 0
        entries.append((method, path, status, duration_ms, payload_bytes))

    def __len__(self) -> int:
        return len(self._entries)

    def retained_bytes(self) -> int:
        return self._bytes

    def summaries(self) -> list[RequestSummary]:
        """The kept summaries, oldest first."""
        return [RequestSummary(*row) for row in self._entries]
