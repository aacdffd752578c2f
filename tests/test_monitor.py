"""Specification of sixty_core.monitor's sessions: a request opens its session's monitor
once, every request counts one interaction on each of its listeners, and the least
recently seen session is the one closed past the bound."""

from __future__ import annotations

import asyncio

from sixty_core.memory import MemoryManager
from sixty_core.monitor import INTERACTION_EVENTS, OPTIMIZED_MONITORING, PerformanceMonitor


def _monitor(max_sessions: int) -> PerformanceMonitor:
    return PerformanceMonitor(
        MemoryManager(tracking=True, peak_reader=None), 10.0, OPTIMIZED_MONITORING, max_sessions
    )


def test_touch_counts_a_request_only_of_an_open_session() -> None:
    async def requests() -> None:
        monitor = _monitor(max_sessions=4)
        assert monitor.touch("a") is False  # never seen: nothing opened, nothing counted
        assert (monitor.active, monitor.interactions) == (0, 0)
        await monitor.on_request("a")
        assert (monitor.active, monitor.interactions) == (1, len(INTERACTION_EVENTS))
        assert monitor.touch("a") is True
        await monitor.on_request("a")  # an open session is touched, not opened again
        assert (monitor.active, monitor.interactions) == (1, 3 * len(INTERACTION_EVENTS))
        await monitor.close()

    asyncio.run(requests())


def test_the_least_recently_seen_session_is_closed_past_the_bound() -> None:
    async def requests() -> None:
        monitor = _monitor(max_sessions=2)
        await monitor.on_request("a")
        await monitor.on_request("b")
        assert monitor.touch("a")  # "b" is now the least recently seen
        await monitor.on_request("c")
        assert (monitor.touch("a"), monitor.touch("b"), monitor.touch("c")) == (True, False, True)
        await monitor.close()

    asyncio.run(requests())
