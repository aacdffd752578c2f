"""The original's performance monitoring, reproduced on the server, one session per "page".

The original client ran, for every mounted page (ORIGINAL_SYSTEM.md §2.1 "Leaks and
lifecycle"; the fixes in §3.10):

- ``performanceMonitor.ts``: an untracked 10 s ``setInterval`` memory check that was never
  cleared, and metric arrays capped at 1000 entries and trimmed to 500 (``apiMetrics``,
  ``componentMetrics``) and at 100 trimmed to 50 (``metrics``). AFTER: the interval is kept
  and cleared on cleanup and runs every 30 s; the caps are 100/50 and 20/10.
- ``usePerformanceOptimization.ts``: interaction listeners (popstate, mousedown,
  touchstart, keydown, scroll) registered ad hoc and never removed. AFTER: kept in a list
  and removed on cleanup.

Here a session (one bearer token) plays the page: its first request opens a memory-manager
scope ``session_monitor`` holding the repeating timer and the five interaction listeners on
the session's own registry; every request of the session is an interaction and an API
metric. Logout is the unmount. With ``resource_tracking`` (:data:`OPTIMIZED_MONITORING`)
closing the scope releases them, and at most ``max_sessions`` monitors live at once (the
least recently seen is closed: a session that stops calling never logs out). Without it
(:data:`LEGACY_MONITORING`) the timer keeps firing and the listeners stay registered after
logout, exactly as the original leaked; the memory manager reports the component leaking.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sixty_core.memory import ComponentScope, ListenerRegistry, MemoryManager

#: The events usePerformanceOptimization listened to on ``document``/``window``.
INTERACTION_EVENTS = ("popstate", "mousedown", "touchstart", "keydown", "scroll")
COMPONENT = "session_monitor"


@dataclass(frozen=True, kw_only=True)
class MonitoringPolicy:
    """How a profile monitors: timer period factor, metric caps, session bound."""

    #: The timer period is ``settings.session_monitor_period_s`` times this (AFTER: 30 s
    #: instead of 10 s).
    period_factor: float
    api_metrics_cap: int
    api_metrics_trim_to: int
    tick_metrics_cap: int
    tick_metrics_trim_to: int
    bounded_sessions: bool


#: BEFORE (§2.1): 10 s timer, arrays 1000 -> 500 and 100 -> 50, monitors never bounded.
LEGACY_MONITORING = MonitoringPolicy(
    period_factor=1.0,
    api_metrics_cap=1000,
    api_metrics_trim_to=500,
    tick_metrics_cap=100,
    tick_metrics_trim_to=50,
    bounded_sessions=False,
)
#: AFTER (§3.10): 30 s timer, arrays 100 -> 50 and 20 -> 10, at most max_sessions monitors.
OPTIMIZED_MONITORING = MonitoringPolicy(
    period_factor=3.0,
    api_metrics_cap=100,
    api_metrics_trim_to=50,
    tick_metrics_cap=20,
    tick_metrics_trim_to=10,
    bounded_sessions=True,
)


class MetricArray:
    """A list of entries that, past ``cap``, is cut back to its newest ``trim_to``."""

    def __init__(self, *, cap: int, trim_to: int) -> None:
        if not 0 <= trim_to < cap:
            raise ValueError(f"need 0 <= trim_to < cap, got cap={cap}, trim_to={trim_to}")
        self._cap = cap
        self._trim_to = trim_to
        self._entries: list[tuple[Any, ...]] = []
        self.trims = 0

    def append(self, entry: tuple[Any, ...]) -> None:
        self._entries.append(entry)
        if len(self._entries) > self._cap:
            del self._entries[: len(self._entries) - self._trim_to]
            self.trims += 1

    def __len__(self) -> int:
        return len(self._entries)

    def retained_bytes(self) -> int:
        """Shallow size of the list and its entries (the values are shared or small)."""
        return sys.getsizeof(self._entries) + sum(sys.getsizeof(e) for e in self._entries)


@dataclass
class _Session:
    scope: ComponentScope
    interactions: ListenerRegistry


@dataclass
class PerformanceMonitor:
    """Per-session timers and interaction listeners, and the API metric arrays."""

    memory: MemoryManager
    period_s: float
    policy: MonitoringPolicy
    max_sessions: int
    _sessions: OrderedDict[str, _Session] = field(default_factory=OrderedDict)
    ticks: int = 0
    interactions: int = 0

    def __post_init__(self) -> None:
        p = self.policy
        self.api_metrics = MetricArray(cap=p.api_metrics_cap, trim_to=p.api_metrics_trim_to)
        self.tick_metrics = MetricArray(cap=p.tick_metrics_cap, trim_to=p.tick_metrics_trim_to)

    def touch(self, token_hash: str) -> bool:
        """A request of session ``token_hash`` whose monitor is open: count the interaction
        on its listeners and return True; False (nothing done) when it has none open, and
        :meth:`on_request` must open it. A session's every request but its first ends here,
        without a coroutine."""
        session = self._sessions.get(token_hash)
        if session is None:
            return False
        self._sessions.move_to_end(token_hash)
        session.interactions.notify(token_hash)
        return True

    async def on_request(self, token_hash: str) -> None:
        """A request of session ``token_hash``: open its monitor the first time, then
        count the interaction on its listeners."""
        if self.touch(token_hash):
            return
        session = self._open(token_hash)
        if self.policy.bounded_sessions and len(self._sessions) > self.max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            await oldest.scope.close()
        session.interactions.notify(token_hash)

    def _open(self, token_hash: str) -> _Session:
        scope = self.memory.open_scope(COMPONENT)
        period_s = self.period_s * self.policy.period_factor
        scope.call_every(period_s, lambda: self._tick(token_hash))
        session = _Session(scope, ListenerRegistry())
        for event in INTERACTION_EVENTS:
            scope.add_listener(session.interactions, self._interaction_listener(event))
        self._sessions[token_hash] = session
        return session

    def _tick(self, token_hash: str) -> None:
        self.ticks += 1
        self.tick_metrics.append(("memory_check", token_hash[:8]))

    def _interaction_listener(self, event: str) -> Any:
        def listener(_: object) -> None:
            self.interactions += 1

        listener.__qualname__ = f"on_{event}"
        return listener

    def record_api(self, method: str, path: str, status: int, duration_ms: float) -> None:
        """One API call, appended to the capped metric array."""
        self.api_metrics.append((method, path, status, duration_ms))

    async def on_logout(self, token_hash: str) -> None:
        """The session's page unmounts: close its scope (what that releases depends on
        the memory manager's tracking)."""
        session = self._sessions.pop(token_hash, None)
        if session is not None:
            await session.scope.close()

    @property
    def active(self) -> int:
        """Sessions whose monitor is open (not counting leaked ones)."""
        return len(self._sessions)

    def retained_bytes(self) -> int:
        return self.api_metrics.retained_bytes() + self.tick_metrics.retained_bytes()

    async def close(self) -> None:
        for session in list(self._sessions.values()):
            await session.scope.close()
        self._sessions.clear()
