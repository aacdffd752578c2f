"""The memory manager: scopes release (or, legacy, leak) their resources; RSS thresholds,
trend and cleanup with injected samples and a fake clock; request logs; the error boundary."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sixty_core.accounting import RequestAccounting
from sixty_core.api.boundary import MemoryAwareErrorBoundary, Message, Receive, Scope, Send
from sixty_core.errors import LifecycleError
from sixty_core.memory import (
    MB,
    ComponentScope,
    ListenerRegistry,
    MemoryManager,
    ScopedTimer,
    process_peak_rss_bytes,
)


@dataclass
class FakeClock:
    """A monotonic clock that only moves when a test calls :meth:`tick`."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


class FakeRss:
    """An rss_reader returning queued megabyte figures (the last one repeats)."""

    def __init__(self, *mbs: float) -> None:
        self.mbs = list(mbs)

    def push(self, *mbs: float) -> None:
        self.mbs.extend(mbs)

    def __call__(self) -> int:
        mb = self.mbs.pop(0) if len(self.mbs) > 1 else self.mbs[0]
        return int(mb * MB)


async def _until(done: Callable[[], bool], *, attempts: int = 1000) -> None:
    """Let the loop run (in 2 ms steps, at most ``attempts`` of them) until ``done()``."""
    for _ in range(attempts):
        if done():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


def manager(clock: FakeClock, *mbs: float, **kw: Any) -> MemoryManager:
    return MemoryManager(rss_reader=FakeRss(*(mbs or (50.0,))), peak_reader=None, clock=clock, **kw)


class Workload:
    """One component's resources: a sleeping task, a repeating and a one-shot timer, a
    listener on a registry and a retained payload."""

    def __init__(self, scope: ComponentScope, registry: ListenerRegistry) -> None:
        self.events: list[Any] = []
        self.ticks = 0
        self.task = scope.create_task(asyncio.sleep(3600), name="workload-sleeper")
        self.monitor: ScopedTimer = scope.call_every(10.0, self._tick)
        self.oneshot: ScopedTimer = scope.call_later(60.0, self._tick)
        self.listener = self.events.append
        scope.add_listener(registry, self.listener)
        self.payload = scope.retain(b"x" * 10_000)

    def _tick(self) -> None:
        self.ticks += 1


async def test_tracking_scope_releases_everything_on_close(fake_clock: FakeClock) -> None:
    """With tracking, close cancels tasks and timers, removes listeners and drops objects."""
    memory = manager(fake_clock)
    registry = ListenerRegistry()
    scope = memory.open_scope("feed_client")
    work = Workload(scope, registry)
    assert scope.get_stats() == {
        "tasks_active": 1,
        "timers_active": 2,
        "listeners_active": 1,
        "retained_bytes": scope.get_stats()["retained_bytes"],
        "closed": False,
    }
    assert scope.get_stats()["retained_bytes"] >= 10_000
    monitor_handle = work.monitor.handle

    assert await scope.close(timeout_s=5) == []

    assert work.task.cancelled()
    assert work.monitor.cancelled() and monitor_handle.cancelled()
    assert work.oneshot.cancelled() and work.oneshot.handle.cancelled()
    assert len(registry) == 0 and registry.notify("deal") == 0
    assert scope.get_stats() == {
        "tasks_active": 0,
        "timers_active": 0,
        "listeners_active": 0,
        "retained_bytes": 0,
        "closed": True,
    }
    assert memory.leaking_components() == []
    stats = memory.get_stats()
    assert (stats["scopes_open"], stats["scopes_closed"], stats["scopes_leaking"]) == (0, 1, 0)


async def test_legacy_scope_leaks_everything_on_close(fake_clock: FakeClock) -> None:
    """Without tracking, close releases nothing: the component is reported as leaking."""
    memory = manager(fake_clock, tracking=False)
    registry = ListenerRegistry()
    scope = memory.open_scope("feed_client")
    work = Workload(scope, registry)

    assert await scope.close() == []

    assert scope.closed
    assert not work.task.done()
    assert work.monitor.armed and not work.monitor.handle.cancelled()
    assert work.listener in registry and registry.notify("deal") == 1
    assert work.events == ["deal"]
    assert memory.leaking_components() == ["feed_client"]
    assert memory.leaking_scopes() == [scope.scope_id]
    stats = memory.get_stats()
    assert stats["scopes_leaking"] == 1
    assert (stats["tasks_active"], stats["timers_active"], stats["listeners_active"]) == (1, 2, 1)
    assert stats["retained_bytes"] >= 10_000
    assert stats["components"]["feed_client"]["scopes_leaking"] == 1

    assert memory.release_closed() == 1 + 2 + 1 + 1
    await asyncio.sleep(0)  # let the cancelled task finish

    assert work.task.cancelled()
    assert work.monitor.cancelled() and len(registry) == 0
    assert memory.leaking_components() == []
    assert memory.get_stats()["retained_bytes"] == 0


@pytest.mark.parametrize("tracking", [False, True])
async def test_repeating_timer_after_close(fake_clock: FakeClock, tracking: bool) -> None:
    """The legacy performance monitor goes on ticking after its scope closed; tracking stops it."""
    memory = manager(fake_clock, tracking=tracking)
    scope = memory.open_scope("session_monitor")
    ticks: list[int] = []
    timer = scope.call_every(0.002, lambda: ticks.append(1))
    await _until(lambda: len(ticks) >= 2)
    await scope.close()
    seen = len(ticks)
    if tracking:
        assert timer.cancelled() and timer.handle.cancelled()
        await asyncio.sleep(0.02)  # ten periods: a live timer would have ticked
        assert len(ticks) == seen
    else:
        await _until(lambda: len(ticks) > seen)
        assert timer.armed and not timer.handle.cancelled()
        assert memory.release_closed() == 1
        assert timer.cancelled() and timer.handle.cancelled()


async def test_repeating_timer_survives_a_raising_callback(fake_clock: FakeClock) -> None:
    """A callback that raises is logged and the repeating timer re-arms anyway."""
    scope = manager(fake_clock).open_scope("monitor")
    calls: list[int] = []

    def boom() -> None:
        calls.append(1)
        raise RuntimeError("monitor failed")

    timer = scope.call_every(0.001, boom)
    await _until(lambda: len(calls) >= 3)
    assert timer.armed
    await scope.close()
    assert not timer.armed


async def test_one_shot_timer_fires_once_and_drops_out(fake_clock: FakeClock) -> None:
    """A fired one-shot timer is no longer active, so it does not make a closed scope leak."""
    memory = manager(fake_clock, tracking=False)
    scope = memory.open_scope("adhoc_callback")
    fired: list[int] = []
    timer = scope.call_later(0, lambda: fired.append(1))
    await scope.close()
    assert memory.leaking_components() == ["adhoc_callback"]
    await _until(lambda: bool(fired))
    assert fired == [1] and not timer.armed and timer.fires == 1
    assert memory.leaking_components() == []


async def test_close_reports_stragglers_and_keeps_them_leaking(fake_clock: FakeClock) -> None:
    """A task that ignores cancellation past the timeout is a straggler, still counted."""
    memory = manager(fake_clock)
    scope = memory.open_scope("stubborn")
    release = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await release.wait()
                return
            except asyncio.CancelledError:
                continue  # refuses to die until released

    task = scope.create_task(stubborn(), name="stubborn-task")
    await asyncio.sleep(0)
    assert await scope.close(timeout_s=0.01) == ["stubborn-task"]
    assert memory.get_stats()["close_stragglers"] == 1
    assert memory.leaking_components() == ["stubborn"]
    assert await scope.close() == ["stubborn-task"]
    release.set()
    await asyncio.wait_for(task, 5)
    assert memory.leaking_components() == []


async def test_done_tasks_drop_out_and_failures_are_logged(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A finished task leaves the scope; a failed one has its exception logged, not lost."""
    scope = manager(fake_clock).open_scope("worker")

    async def fail() -> None:
        raise ValueError("task failed")

    ok = scope.create_task(asyncio.sleep(0), name="ok")
    bad = scope.create_task(fail(), name="bad")
    await asyncio.wait([ok, bad], timeout=5)
    await asyncio.sleep(0)
    assert scope.get_stats()["tasks_active"] == 0
    assert any("task bad failed" in r.getMessage() for r in caplog.records)
    await scope.close()


async def test_scope_is_an_async_context_manager_and_close_is_idempotent(
    fake_clock: FakeClock,
) -> None:
    """``async with`` closes the scope; closing again is a no-op; a closed scope refuses work."""
    memory = manager(fake_clock)
    registry = ListenerRegistry()
    async with memory.open_scope("feed_client") as scope:
        scope.add_listener(registry, print)
        assert memory.get_stats()["scopes_open"] == 1
    assert scope.closed and len(registry) == 0
    assert await scope.close() == []
    assert memory.get_stats()["scopes_closed"] == 1
    with pytest.raises(LifecycleError, match="feed_client#1"):
        scope.call_later(1, print)
    with pytest.raises(LifecycleError):
        scope.create_task(asyncio.sleep(0))
    with pytest.raises(LifecycleError):
        scope.retain(b"x")


async def test_components_aggregate_scopes_of_one_name(fake_clock: FakeClock) -> None:
    """Scopes sharing a component name are summed in ``components``."""
    memory = manager(fake_clock, tracking=False)
    registry = ListenerRegistry()
    scopes = [memory.open_scope("feed_client") for _ in range(3)]
    for scope in scopes:
        events: list[object] = []
        scope.add_listener(registry, events.append)
        scope.retain(object(), nbytes=100)
    await scopes[0].close()
    other = memory.open_scope("session_monitor")
    other.call_every(60, print)
    stats = memory.get_stats()
    assert stats["components"]["feed_client"] == {
        "scopes_open": 2,
        "scopes_closed": 1,
        "scopes_leaking": 1,
        "tasks_active": 0,
        "timers_active": 0,
        "listeners_active": 3,
        "retained_bytes": 300,
    }
    assert stats["components"]["session_monitor"]["timers_active"] == 1
    assert (stats["listeners_active"], stats["timers_active"], stats["retained_bytes"]) == (
        3,
        1,
        300,
    )
    memory.release_closed()
    for scope in (*scopes, other):
        await scope.close()
    memory.release_closed()


async def test_scope_removes_listeners_early_and_releases_objects(fake_clock: FakeClock) -> None:
    """``remove_listener`` and ``release`` undo their counterparts before close."""
    scope = manager(fake_clock).open_scope("c")
    registry = ListenerRegistry()
    listener = print
    obj = scope.retain([1, 2, 3])
    scope.add_listener(registry, listener)
    assert scope.remove_listener(registry, listener) and len(registry) == 0
    assert not scope.remove_listener(registry, listener)
    assert scope.release(obj) and not scope.release(obj)
    assert scope.get_stats()["retained_bytes"] == 0
    await scope.close()


def test_listener_registry_isolates_failing_listeners() -> None:
    """A raising listener does not stop the others; add twice registers once."""
    registry = ListenerRegistry()
    seen: list[str] = []

    def bad(event: str) -> None:
        raise RuntimeError(event)

    registry.add_listener(bad)
    registry.add_listener(seen.append)
    registry.add_listener(seen.append)
    assert len(registry) == 2
    assert registry.notify("e") == 2 and seen == ["e"]
    assert registry.remove_listener(bad) and not registry.remove_listener(bad)


# -- RSS levels, trend, cleanup -------------------------------------------------------------


def test_levels_follow_thresholds(fake_clock: FakeClock) -> None:
    """Below warning is normal, from warning warning, from critical critical; peak is kept."""
    memory = manager(fake_clock, 50, 100, 150, 200, 120, warning_mb=100, critical_mb=200)
    assert memory.get_stats()["level"] == "normal" and memory.get_stats()["samples"] == 0
    levels = []
    for _ in range(5):
        memory.sample()
        levels.append(memory.level)
    assert levels == ["normal", "warning", "warning", "critical", "warning"]
    stats = memory.get_stats()
    assert stats["rss_mb"] == pytest.approx(120) and stats["peak_rss_mb"] == pytest.approx(200)
    assert stats["samples"] == 5


@pytest.mark.parametrize(
    ("mbs", "expected"),
    [
        ((50, 55, 60, 65, 70), "increasing"),
        ((70, 65, 60, 55, 50), "decreasing"),
        ((50, 50.2, 49.9, 50.1, 50), "stable"),
        ((50, 90), "unknown"),
    ],
)
def test_trend_from_least_squares_slope(
    fake_clock: FakeClock, mbs: tuple[float, ...], expected: str
) -> None:
    """5 MB per 5 s is a trend either way; sub-MB noise is stable; two samples are unknown."""
    memory = manager(fake_clock, *mbs)
    for _ in mbs:
        memory.sample()
        fake_clock.tick(5)
    assert memory.trend() == expected
    assert memory.get_stats()["trend"] == expected


def test_trend_uses_only_the_window(fake_clock: FakeClock) -> None:
    """Old growth falls out of the window: a plateau after a climb reads as stable."""
    memory = manager(fake_clock, 10, 20, 30, 40, 50, 50, 50, 50, trend_window=4)
    for _ in range(8):
        memory.sample()
        fake_clock.tick(1)
    assert memory.trend() == "stable"


def test_trend_with_one_timestamp_is_unknown(fake_clock: FakeClock) -> None:
    """Samples that share a timestamp give no slope."""
    memory = manager(fake_clock, 10, 20, 30)
    for _ in range(3):
        memory.sample()
    assert memory.trend() == "unknown" and memory.get_stats()["trend_mb_per_s"] is None


def test_critical_runs_cleanup_once_per_cooldown(fake_clock: FakeClock) -> None:
    """At critical the hooks run, but not again until the cooldown has passed."""
    memory = manager(fake_clock, 250, cleanup_cooldown_s=30)
    runs: list[str] = []
    memory.add_cleanup_hook("shrink_caches", lambda: runs.append("shrink"))
    memory.add_cleanup_hook("broken", lambda: 1 / 0)
    for _ in range(10):
        memory.sample()
        fake_clock.tick(2.9)  # ten samples within 29 s: one run
    assert runs == ["shrink"]
    fake_clock.tick(1.1)
    memory.sample()
    assert runs == ["shrink", "shrink"]
    stats = memory.get_stats()
    assert (stats["cleanups_run"], stats["cleanups_skipped"], stats["cleanup_errors"]) == (2, 9, 2)
    assert memory.remove_cleanup_hook("shrink_caches")
    assert not memory.remove_cleanup_hook("shrink_caches")


def test_warning_level_does_not_run_cleanup_on_sample(fake_clock: FakeClock) -> None:
    """Only critical triggers cleanup from sampling."""
    memory = manager(fake_clock, 150)
    runs: list[int] = []
    memory.add_cleanup_hook("h", lambda: runs.append(1))
    memory.sample()
    assert runs == [] and memory.get_stats()["cleanups_run"] == 0


def test_bad_thresholds_are_rejected() -> None:
    """Constructor arguments that cannot work raise ValueError naming them."""
    with pytest.raises(ValueError, match="warning_mb"):
        MemoryManager(warning_mb=300, critical_mb=200)
    with pytest.raises(ValueError, match="trend_window"):
        MemoryManager(trend_window=2)


async def test_sampler_runs_in_background_and_stops_on_close(fake_clock: FakeClock) -> None:
    """start_sampling samples in a named task that close cancels; starting twice is an error."""

    async def fast_sleep(_: float) -> None:
        await asyncio.sleep(0)

    memory = manager(fake_clock, sleep=fast_sleep)
    await memory.start_sampling(5)
    assert any(t.get_name() == "sixty-memory-sampler" for t in asyncio.all_tasks())
    with pytest.raises(LifecycleError):
        await memory.start_sampling(5)
    for _ in range(100):
        if memory.get_stats()["samples"] >= 3:
            break
        await asyncio.sleep(0)
    assert memory.get_stats()["samples"] >= 3 and memory.sampling
    await memory.close()
    assert not memory.sampling
    assert not any(t.get_name() == "sixty-memory-sampler" for t in asyncio.all_tasks())
    await memory.close()


def test_default_reader_reads_this_process() -> None:
    """Without an injected reader the manager samples the real RSS."""
    memory = MemoryManager()
    assert memory.sample() > 1.0


def test_peak_is_the_kernels_high_water_mark_not_the_highest_sample() -> None:
    """Memory allocated and freed between two samples never shows in a sample, yet the
    peak (VmHWM) has it: the peak is the kernel's figure, not max(samples)."""
    memory = MemoryManager()
    before = memory.sample()
    ballast = bytearray(64 * MB)
    ballast[::4096] = b"x" * len(range(0, len(ballast), 4096))  # touch every page
    del ballast
    after = memory.sample()
    peak = memory.get_stats()["peak_rss_mb"]
    assert peak >= max(before, after) + 48, (before, after, peak)
    assert peak == pytest.approx(process_peak_rss_bytes() / MB, abs=1)


# -- error boundary -------------------------------------------------------------------------


async def _ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("password=hunter2 at db.internal:5432")


async def _late_failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("after start")


@pytest.fixture
def boundary_manager(fake_clock: FakeClock) -> Iterator[MemoryManager]:
    yield manager(fake_clock, 50)


async def _get(app: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/api/deals")


def _accounted(app: Any, statuses: list[int]) -> RequestAccounting:
    """``app`` inside request accounting, as the service runs its boundary: the boundary
    then learns that the response started from the scope instead of wrapping ``send``."""
    return RequestAccounting(app, on_done=lambda done: statuses.append(done.status))


@pytest.mark.parametrize("accounted", [False, True], ids=["alone", "accounted"])
async def test_boundary_returns_sanitized_500(
    boundary_manager: MemoryManager, accounted: bool
) -> None:
    """An exception before the response becomes the 500 envelope without its text."""
    boundary = MemoryAwareErrorBoundary(_failing_app, boundary_manager)
    statuses: list[int] = []
    response = await _get(_accounted(boundary, statuses) if accounted else boundary)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "data": None,
        "error": {
            "code": "internal_error",
            "message": "internal error; the request was not completed",
        },
    }
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert boundary.errors_caught == 1
    assert boundary_manager.get_stats()["boundary_errors_caught"] == 1
    assert statuses == ([500] if accounted else [])


async def test_boundary_passes_good_responses_through(boundary_manager: MemoryManager) -> None:
    """A healthy app's response is untouched and nothing is counted."""
    response = await _get(MemoryAwareErrorBoundary(_ok_app, boundary_manager))
    assert (response.status_code, response.text) == (200, "ok")
    assert boundary_manager.get_stats()["boundary_errors_caught"] == 0


@pytest.mark.parametrize("accounted", [False, True], ids=["alone", "accounted"])
async def test_boundary_reraises_after_response_started(
    boundary_manager: MemoryManager, accounted: bool
) -> None:
    """Once the status line is sent, the error propagates to the server."""
    boundary = MemoryAwareErrorBoundary(_late_failing_app, boundary_manager)
    statuses: list[int] = []
    with pytest.raises(RuntimeError, match="after start"):
        await _get(_accounted(boundary, statuses) if accounted else boundary)
    assert boundary.errors_caught == 0
    assert statuses == ([200] if accounted else [])


async def test_boundary_runs_cleanup_above_normal_with_cooldown(fake_clock: FakeClock) -> None:
    """At warning or worse an error runs the hooks, once per cooldown; at normal never."""
    rss = FakeRss(50)
    memory = MemoryManager(rss_reader=rss, clock=fake_clock, cleanup_cooldown_s=30)
    runs: list[int] = []
    memory.add_cleanup_hook("shrink", lambda: runs.append(1))
    boundary = MemoryAwareErrorBoundary(_failing_app, memory)
    await _get(boundary)
    assert runs == []
    rss.mbs = [150]
    for _ in range(3):
        await _get(boundary)
    assert runs == [1]
    fake_clock.tick(31)
    await _get(boundary)
    assert runs == [1, 1]
    assert memory.get_stats()["boundary_errors_caught"] == 5


class _Refused(LookupError):
    """A mapped error whose subclass must find its base's handler."""


class _RefusedHere(_Refused):
    pass


async def _refusing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise _RefusedHere("no such deal")


async def _answer_refusal(request: Any, exc: Exception) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"refused": str(exc), "path": request.url.path}, status_code=404)


async def _broken_handler(request: Any, exc: Exception) -> Any:
    raise RuntimeError("the handler broke: password=hunter2")


@pytest.mark.parametrize("accounted", [False, True], ids=["alone", "accounted"])
async def test_boundary_answers_a_mapped_error_with_its_handler(
    boundary_manager: MemoryManager, accounted: bool
) -> None:
    """An exception whose class (or a base, along the MRO) has a handler gets the handler's
    answer; nothing is counted as an unhandled error."""
    boundary = MemoryAwareErrorBoundary(
        _refusing_app, boundary_manager, handlers={_Refused: _answer_refusal}
    )
    statuses: list[int] = []
    response = await _get(_accounted(boundary, statuses) if accounted else boundary)
    assert statuses == ([404] if accounted else [])
    assert response.status_code == 404
    assert response.json() == {"refused": "no such deal", "path": "/api/deals"}
    assert boundary.errors_caught == 0
    assert boundary_manager.get_stats()["boundary_errors_caught"] == 0


async def test_boundary_sends_the_500_when_a_handler_fails(
    boundary_manager: MemoryManager,
) -> None:
    """A handler that raises is an unhandled error: the sanitized 500, counted."""
    boundary = MemoryAwareErrorBoundary(
        _refusing_app, boundary_manager, handlers={_Refused: _broken_handler}
    )
    response = await _get(boundary)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "hunter2" not in response.text
    assert boundary.errors_caught == 1


async def test_boundary_leaves_unmapped_errors_to_the_500(
    boundary_manager: MemoryManager,
) -> None:
    """A handler for another class does not catch this one."""
    boundary = MemoryAwareErrorBoundary(
        _failing_app, boundary_manager, handlers={_Refused: _answer_refusal}
    )
    response = await _get(boundary)
    assert response.status_code == 500
    assert boundary.errors_caught == 1


async def test_boundary_ignores_non_http_scopes(boundary_manager: MemoryManager) -> None:
    """Lifespan and websocket scopes pass straight through, errors included."""
    boundary = MemoryAwareErrorBoundary(_failing_app, boundary_manager)

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    with pytest.raises(RuntimeError):
        await boundary({"type": "lifespan"}, receive, send)
    assert boundary.errors_caught == 0
