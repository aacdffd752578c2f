"""Shared type aliases and protocols, kept in one place so modules agree on them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: A monotonic clock in seconds; injected so tests can pass a fake clock with ``tick()``.
Clock = Callable[[], float]

#: A database row as the service layer sees it: plain JSON-able values keyed by column.
Row = dict[str, Any]

#: An environment-like mapping of settings (``os.environ`` at the edge, a dict in tests).
Environ = Mapping[str, str]
