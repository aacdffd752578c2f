"""The memory manager: component scopes that own resources, RSS sampling, cleanup.

A component (a feed client, a session's performance monitor) opens a
:class:`ComponentScope` and registers everything it holds through it: tasks, one-shot and
repeating timers, listeners on a :class:`ListenerRegistry`, and retained objects. Closing
the scope releases them all when the manager *tracks* resources (the optimized profile).
With ``tracking=False`` (the legacy profile) closing only marks the scope closed and
releases nothing, exactly as the original leaked (ORIGINAL_SYSTEM.md §2.1 "Leaks and
lifecycle"): timers keep firing, listeners stay registered, objects stay referenced, tasks
keep running. Either way the manager knows every closed scope that still holds something,
so :meth:`MemoryManager.leaking_components` is a measured figure, not a constant.
:meth:`MemoryManager.release_closed` frees them at shutdown.

RSS sampling: :meth:`MemoryManager.sample` reads the process RSS, keeps the last
``trend_window`` samples, tracks the peak and a level (``normal`` below ``warning_mb``,
``warning`` below ``critical_mb``, else ``critical``). At ``critical`` it runs the cleanup
hooks, at most once per ``cleanup_cooldown_s`` so a process stuck above the line does not
run them in a storm. ``MB`` here means MiB (2**20 bytes).

Stats (:meth:`MemoryManager.get_stats`):

========================== ===============================================================
key                        meaning
========================== ===============================================================
``rss_mb``                 RSS at the last sample (0.0 before the first)
``peak_rss_mb``            peak RSS: the kernel's ``VmHWM`` (every page ever resident at
                           once, not just at sample times); the highest sample where the
                           kernel does not report it or ``peak_reader`` is None
``level``                  ``normal`` / ``warning`` / ``critical`` at the last sample
``trend``                  ``increasing`` / ``decreasing`` / ``stable`` / ``unknown``
``trend_mb_per_s``         least-squares RSS slope over the window (None when unknown)
``samples``                samples taken since start
``tracking``               whether closing a scope releases its resources
``scopes_open``            scopes open now
``scopes_closed``          scopes closed since start
``scopes_leaking``         closed scopes still holding a live resource
``close_stragglers``       tasks that outlived a scope's close timeout, since start
``cleanups_run``           emergency cleanups run (each runs every hook once)
``cleanups_skipped``       cleanups refused by the cooldown
``cleanup_errors``         hooks that raised
``boundary_errors_caught`` unhandled request errors turned into a 500 by the error boundary
``tasks_active``           undone tasks over all scopes (open and closed)
``timers_active``          armed timers over all scopes
``listeners_active``       listeners still registered over all scopes
``retained_bytes``         estimated bytes of retained objects over all scopes
``components``             per component name: ``scopes_open``, ``scopes_closed``,
                           ``scopes_leaking``, ``tasks_active``, ``timers_active``,
                           ``listeners_active``, ``retained_bytes`` (scopes of one name summed)
========================== ===============================================================

Not thread-safe: use a manager, its scopes and registries from one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

import psutil

from sixty_core.errors import LifecycleError
from sixty_core.types import Clock

logger = logging.getLogger(__name__)

T = TypeVar("T")

MB = 1024 * 1024
DEFAULT_WARNING_MB = 100.0
DEFAULT_CRITICAL_MB = 200.0
DEFAULT_TREND_WINDOW = 10
#: The sampler's default period.
DEFAULT_SAMPLE_INTERVAL_S = 5.0
#: Slope beyond which RSS is ``increasing``/``decreasing``: 0.5 MB per default 5 s sample
#: interval. Allocator noise on a steady process stays well below it; a 100 MB leak
#: shows within about 17 minutes.
DEFAULT_TREND_THRESHOLD_MB_PER_S = 0.1
#: Cleanup hooks run at most once per this many seconds.
DEFAULT_CLEANUP_COOLDOWN_S = 30.0
#: How long ``ComponentScope.close`` waits for its cancelled tasks to finish.
DEFAULT_CLOSE_TIMEOUT_S = 5.0

Level = Literal["normal", "warning", "critical"]
Trend = Literal["increasing", "decreasing", "stable", "unknown"]
Listener = Callable[[Any], object]
CleanupHook = Callable[[], object]
Sleep = Callable[[float], Awaitable[None]]


def process_rss_bytes() -> int:
    """The resident set size of the current process, in bytes (psutil)."""
    # A fresh Process each call is fork-safe and costs two small /proc reads.
    return int(psutil.Process().memory_info().rss)


def process_peak_rss_bytes(pid: int | None = None) -> int | None:
    """The kernel's high-water mark of the RSS of process ``pid`` (this one by default):
    ``VmHWM`` in ``/proc/<pid>/status``, in bytes; None where the kernel does not report
    it or the process is gone."""
    try:
        with open(f"/proc/{pid or 'self'}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


class ListenerRegistry:
    """Callables notified of events, in registration order; ``add_*``/``remove_*`` pairs.

    Listeners must be hashable (functions, bound methods and closures are). A listener that
    raises is logged and the others still run. Adding a listener twice registers it once.
    """

    def __init__(self) -> None:
        self._listeners: dict[Listener, None] = {}

    def add_listener(self, listener: Listener) -> None:
        self._listeners[listener] = None

    def remove_listener(self, listener: Listener) -> bool:
        """Unregister ``listener``; False if it was not registered."""
        if listener not in self._listeners:
            return False
        del self._listeners[listener]
        return True

    def notify(self, event: Any) -> int:
        """Call every listener with ``event``; return how many were called."""
        # Snapshot: a listener may remove itself (or another) while we iterate.
        listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("listener %r failed", listener)
        return len(listeners)

    def __contains__(self, listener: object) -> bool:
        return listener in self._listeners

    def __len__(self) -> int:
        return len(self._listeners)


class ScopedTimer:
    """A one-shot or repeating timer owned by a scope; see :meth:`ComponentScope.call_every`.

    A repeating timer re-arms itself with ``loop.call_later`` *before* running its callback
    (``setInterval`` semantics), so a callback that raises is logged and the timer goes on.
    """

    __slots__ = (
        "_callback",
        "_cancelled",
        "_fired",
        "_handle",
        "_loop",
        "_on_done",
        "_period_s",
        "fires",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay_s: float,
        callback: Callable[[], object],
        *,
        period_s: float | None,
        on_done: Callable[[ScopedTimer], None],
    ) -> None:
        self._loop = loop
        self._callback = callback
        self._period_s = period_s
        self._on_done = on_done
        self._cancelled = False
        self._fired = False
        self.fires = 0
        self._handle = loop.call_later(delay_s, self._fire)

    @property
    def handle(self) -> asyncio.TimerHandle:
        """The loop handle currently armed (a repeating timer gets a new one per period)."""
        return self._handle

    @property
    def armed(self) -> bool:
        """True while the callback is still due to run (again)."""
        return not self._cancelled and (self._period_s is not None or not self._fired)

    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Disarm; idempotent."""
        if not self._cancelled:
            self._cancelled = True
            self._handle.cancel()
            self._on_done(self)

    def _fire(self) -> None:
        if self._cancelled:
            return
        self.fires += 1
        if self._period_s is not None:
            self._handle = self._loop.call_later(self._period_s, self._fire)
        else:
            self._fired = True
            self._on_done(self)
        try:
            self._callback()
        except Exception:
            logger.exception("timer callback %r failed", self._callback)


class ComponentScope:
    """The resources of one component instance; create with :meth:`MemoryManager.open_scope`.

    Registering anything on a closed scope raises :class:`LifecycleError`. ``close`` is
    idempotent; what it releases depends on the manager's ``tracking`` (module docstring).
    """

    def __init__(self, manager: MemoryManager, component: str, scope_id: str) -> None:
        self._manager = manager
        self.component = component
        self.scope_id = scope_id
        self.tracking = manager.tracking
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[ScopedTimer] = set()
        self._listeners: list[tuple[ListenerRegistry, Listener]] = []
        self._retained: dict[int, tuple[object, int]] = {}
        self._task_seq = 0

    def _check_open(self) -> None:
        if self.closed:
            raise LifecycleError(f"scope {self.scope_id!r} is closed")

    def create_task(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a task owned by this scope, named ``name`` (default
        ``<scope_id>-task-<n>``). A done task drops out; its exception, if any, is logged."""
        if self.closed:
            coro.close()  # it will never run: close it so no "never awaited" warning fires
            raise LifecycleError(f"scope {self.scope_id!r} is closed")
        self._task_seq += 1
        task = asyncio.get_running_loop().create_task(
            coro, name=name or f"{self.scope_id}-task-{self._task_seq}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("task %s failed", task.get_name(), exc_info=exc)

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> ScopedTimer:
        """Run ``callback`` once after ``delay_s`` seconds (``loop.call_later``)."""
        self._check_open()
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        return self._arm(delay_s, callback, None)

    def call_every(self, period_s: float, callback: Callable[[], object]) -> ScopedTimer:
        """Run ``callback`` every ``period_s`` seconds, first after one period, until the
        timer is cancelled or the scope releases it (the original's ``setInterval``)."""
        self._check_open()
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        return self._arm(period_s, callback, period_s)

    def _arm(
        self, delay_s: float, callback: Callable[[], object], period_s: float | None
    ) -> ScopedTimer:
        timer = ScopedTimer(
            asyncio.get_running_loop(),
            delay_s,
            callback,
            period_s=period_s,
            on_done=self._timers.discard,
        )
        self._timers.add(timer)
        return timer

    def add_listener(self, registry: ListenerRegistry, listener: Listener) -> None:
        """Register ``listener`` on ``registry``; the scope removes it when released."""
        self._check_open()
        registry.add_listener(listener)
        self._listeners.append((registry, listener))

    def remove_listener(self, registry: ListenerRegistry, listener: Listener) -> bool:
        """Unregister ``listener`` early; False if it was not registered through this scope."""
        for i, (reg, lst) in enumerate(self._listeners):
            if reg is registry and lst is listener:
                del self._listeners[i]
                return registry.remove_listener(listener)
        return False

    def retain(self, obj: T, nbytes: int | None = None) -> T:
        """Keep a reference to ``obj`` until released; ``nbytes`` defaults to the shallow
        ``sys.getsizeof(obj)``. Retaining the same object again replaces its size."""
        self._check_open()
        if nbytes is not None and nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        self._retained[id(obj)] = (obj, sys.getsizeof(obj) if nbytes is None else nbytes)
        return obj

    def release(self, obj: object) -> bool:
        """Drop a retained object early; False if it was not retained."""
        return self._retained.pop(id(obj), None) is not None

    async def close(self, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> list[str]:
        """Close the scope; return the names of tasks still running afterwards.

        Tracking: cancel timers, remove listeners, drop retained objects, then cancel the
        tasks and wait up to ``timeout_s`` for them; a task that outlives the wait is a
        straggler (logged, counted, still held, so the scope shows as leaking). A task
        closing its own scope is neither cancelled nor waited for. Not tracking: release
        nothing. A second close only reports the tasks still running.
        """
        if self.closed:
            return sorted(t.get_name() for t in self._tasks if not t.done())
        self.closed = True
        self._manager._scope_closed(self)
        if not self.tracking:
            return []
        # The synchronous releases come first so that a close cancelled during the wait
        # below has still freed everything but the tasks.
        self._release_sync()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        stragglers = sorted(t.get_name() for t in tasks if not t.done())
        if stragglers:
            logger.warning(
                "scope %s: %d task(s) outlived close after %.1f s: %s",
                self.scope_id,
                len(stragglers),
                timeout_s,
                ", ".join(stragglers),
            )
            self._manager._stragglers += len(stragglers)
        self._manager._forget_if_released(self)
        return stragglers

    async def __aenter__(self) -> ComponentScope:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _release_sync(self) -> int:
        """Cancel timers, remove listeners, drop retained objects; return how many."""
        released = len(self._timers) + len(self._retained)
        for timer in list(self._timers):
            timer.cancel()
        for registry, listener in self._listeners:
            released += registry.remove_listener(listener)
        self._listeners.clear()
        self._retained.clear()
        return released

    def _force_release(self) -> int:
        """Release everything regardless of tracking; tasks are cancelled, not awaited."""
        released = self._release_sync()
        for task in self._tasks:
            if not task.done():
                task.cancel()
                released += 1
        return released

    def get_stats(self) -> dict[str, Any]:
        """Live resources now: ``tasks_active``, ``timers_active``, ``listeners_active``,
        ``retained_bytes``, and ``closed``."""
        return {
            "tasks_active": sum(1 for t in self._tasks if not t.done()),
            "timers_active": sum(1 for t in self._timers if t.armed),
            "listeners_active": sum(1 for reg, lst in self._listeners if lst in reg),
            "retained_bytes": sum(n for _, n in self._retained.values()),
            "closed": self.closed,
        }

    @property
    def holds_resources(self) -> bool:
        """True while any task, armed timer, registered listener or retained object is held.
        A retained object counts even when its estimated size is 0."""
        return (
            any(not t.done() for t in self._tasks)
            or any(t.armed for t in self._timers)
            or any(lst in reg for reg, lst in self._listeners)
            or bool(self._retained)
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ComponentScope {self.scope_id} {state} tracking={self.tracking}>"


class MemoryManager:
    """Component scopes, RSS sampling with thresholds and trend, and emergency cleanup.

    Constructing does no I/O; the first RSS read happens in :meth:`sample` (or
    :meth:`start_sampling`). ``ValueError`` for thresholds that are not ``0 < warning_mb
    <= critical_mb``, a ``trend_window`` below 3 or a negative cooldown.
    """

    def __init__(
        self,
        *,
        tracking: bool = True,
        warning_mb: float = DEFAULT_WARNING_MB,
        critical_mb: float = DEFAULT_CRITICAL_MB,
        rss_reader: Callable[[], int] = process_rss_bytes,
        peak_reader: Callable[[], int | None] | None = process_peak_rss_bytes,
        clock: Clock = time.monotonic,
        trend_window: int = DEFAULT_TREND_WINDOW,
        trend_threshold_mb_per_s: float = DEFAULT_TREND_THRESHOLD_MB_PER_S,
        cleanup_cooldown_s: float = DEFAULT_CLEANUP_COOLDOWN_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 < warning_mb <= critical_mb:
            raise ValueError(
                f"need 0 < warning_mb <= critical_mb, got {warning_mb} and {critical_mb}"
            )
        if trend_window < 3:
            raise ValueError(f"trend_window must be >= 3, got {trend_window}")
        if trend_threshold_mb_per_s < 0:
            raise ValueError(
                f"trend_threshold_mb_per_s must be >= 0, got {trend_threshold_mb_per_s}"
            )
        if cleanup_cooldown_s < 0:
            raise ValueError(f"cleanup_cooldown_s must be >= 0, got {cleanup_cooldown_s}")
        self.tracking = tracking
        self.warning_mb = warning_mb
        self.critical_mb = critical_mb
        self._rss_reader = rss_reader
        self._peak_reader = peak_reader
        self._clock = clock
        self._trend_threshold = trend_threshold_mb_per_s
        self._cooldown_s = cleanup_cooldown_s
        self._sleep = sleep
        self._samples: deque[tuple[float, float]] = deque(maxlen=trend_window)
        self._samples_taken = 0
        self._rss_mb = 0.0
        self._peak_mb = 0.0
        self._level: Level = "normal"
        self._hooks: dict[str, CleanupHook] = {}
        self._last_cleanup: float | None = None
        self._cleanups_run = 0
        self._cleanups_skipped = 0
        self._cleanup_errors = 0
        self._boundary_errors = 0
        self._sampler: asyncio.Task[None] | None = None
        self._open: dict[str, ComponentScope] = {}
        self._closed: dict[str, ComponentScope] = {}
        self._scope_seq = 0
        self._opened_by_name: Counter[str] = Counter()
        self._closed_by_name: Counter[str] = Counter()
        self._stragglers = 0

    # -- scopes -------------------------------------------------------------------------

    def open_scope(self, component: str) -> ComponentScope:
        """A new open scope for one instance of ``component`` (id ``<component>#<n>``)."""
        if not component:
            raise ValueError("component name must be non-empty")
        self._scope_seq += 1
        scope = ComponentScope(self, component, f"{component}#{self._scope_seq}")
        self._open[scope.scope_id] = scope
        self._opened_by_name[component] += 1
        return scope

    def _scope_closed(self, scope: ComponentScope) -> None:
        self._open.pop(scope.scope_id, None)
        self._closed[scope.scope_id] = scope
        self._closed_by_name[scope.component] += 1

    def _forget_if_released(self, scope: ComponentScope) -> None:
        if not scope.holds_resources:
            self._closed.pop(scope.scope_id, None)

    def _prune_closed(self) -> None:
        # Closed scopes whose last resource went away (a straggler finished, a one-shot
        # timer fired) stop being leaks; forgetting them keeps the registry bounded.
        for scope_id in [i for i, s in self._closed.items() if not s.holds_resources]:
            del self._closed[scope_id]

    def leaking_scopes(self) -> list[str]:
        """Ids of closed scopes that still hold a live resource, sorted."""
        self._prune_closed()
        return sorted(self._closed)

    def leaking_components(self) -> list[str]:
        """Distinct component names with at least one leaking scope, sorted."""
        self._prune_closed()
        return sorted({s.component for s in self._closed.values()})

    def release_closed(self) -> int:
        """Forcibly release everything closed scopes hold (tasks are cancelled, not awaited:
        let the loop run once). Returns how many resources were released. For shutdown, so a
        stopped legacy app does not keep timers firing."""
        released = sum(s._force_release() for s in self._closed.values())
        self._prune_closed()
        return released

    # -- RSS ----------------------------------------------------------------------------

    def sample(self) -> float:
        """Read RSS now, record it and return it in MB; at ``critical`` run the cleanup
        hooks (subject to the cooldown). Whatever ``rss_reader`` raises propagates."""
        mb = self._rss_reader() / MB
        self._samples.append((self._clock(), mb))
        self._samples_taken += 1
        self._rss_mb = mb
        self._peak_mb = max(self._peak_mb, mb)
        self._level = self._level_for(mb)
        if self._level == "critical":
            self.run_cleanup_hooks()
        return mb

    def peak_rss_mb(self) -> float:
        """Peak RSS in MB: ``VmHWM`` read now, or the highest sample (see the stats table)."""
        peak = self._peak_reader() if self._peak_reader is not None else None
        return max(self._peak_mb, peak / MB) if peak is not None else self._peak_mb

    def _level_for(self, mb: float) -> Level:
        if mb >= self.critical_mb:
            return "critical"
        if mb >= self.warning_mb:
            return "warning"
        return "normal"

    @property
    def level(self) -> Level:
        """The level at the last sample (``normal`` before the first)."""
        return self._level

    def trend_slope_mb_per_s(self) -> float | None:
        """Least-squares slope of RSS over the sample window, or None with fewer than three
        samples or when they all share one timestamp."""
        if len(self._samples) < 3:
            return None
        t0 = self._samples[0][0]
        xs = [t - t0 for t, _ in self._samples]
        ys = [mb for _, mb in self._samples]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx == 0:
            return None
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx

    def trend(self) -> Trend:
        """``increasing``/``decreasing`` when the slope exceeds the threshold either way,
        ``stable`` within it, ``unknown`` when :meth:`trend_slope_mb_per_s` is None."""
        slope = self.trend_slope_mb_per_s()
        if slope is None:
            return "unknown"
        if slope > self._trend_threshold:
            return "increasing"
        if slope < -self._trend_threshold:
            return "decreasing"
        return "stable"

    async def start_sampling(self, interval_s: float = DEFAULT_SAMPLE_INTERVAL_S) -> None:
        """Sample now, then every ``interval_s`` in a named background task until
        :meth:`close`. ``LifecycleError`` if already sampling. A failing read is logged and
        the sampler goes on."""
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if self._sampler is not None:
            raise LifecycleError("the memory sampler is already running")
        self.sample()
        self._sampler = asyncio.get_running_loop().create_task(
            self._sample_forever(interval_s), name="sixty-memory-sampler"
        )

    async def _sample_forever(self, interval_s: float) -> None:
        while True:
            await self._sleep(interval_s)
            try:
                self.sample()
            except Exception:
                logger.exception("memory sample failed")

    @property
    def sampling(self) -> bool:
        return self._sampler is not None and not self._sampler.done()

    async def close(self, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Stop the sampler (cancel, wait up to ``timeout_s``); idempotent. Scopes are their
        owners' to close; sampling may be started again afterwards."""
        sampler, self._sampler = self._sampler, None
        if sampler is None or sampler.done():
            return
        sampler.cancel()
        await asyncio.wait([sampler], timeout=timeout_s)
        if not sampler.done():
            logger.warning("memory sampler outlived close after %.1f s", timeout_s)

    # -- cleanup ------------------------------------------------------------------------

    def add_cleanup_hook(self, name: str, hook: CleanupHook) -> None:
        """Register ``hook`` under ``name`` (replacing a hook of that name)."""
        self._hooks[name] = hook

    def remove_cleanup_hook(self, name: str) -> bool:
        """Unregister the hook ``name``; False if there was none."""
        return self._hooks.pop(name, None) is not None

    def run_cleanup_hooks(self, *, force: bool = False) -> bool:
        """Run every hook once unless one run happened within the cooldown (``force``
        ignores it). A hook that raises is logged and counted; the rest still run. Returns
        True if the hooks ran. With no hooks registered nothing runs or is counted."""
        if not self._hooks:
            return False
        now = self._clock()
        if (
            not force
            and self._last_cleanup is not None
            and now - self._last_cleanup < self._cooldown_s
        ):
            self._cleanups_skipped += 1
            return False
        self._last_cleanup = now
        self._cleanups_run += 1
        for name, hook in list(self._hooks.items()):
            try:
                hook()
            except Exception:
                self._cleanup_errors += 1
                logger.exception("cleanup hook %r failed", name)
        return True

    def record_unhandled_error(self) -> bool:
        """For the error boundary: count an unhandled request error, take a fresh sample,
        and unless the level is ``normal`` run the cleanup hooks (cooldown applies).
        Returns True if hooks ran. Never raises from the RSS read."""
        self._boundary_errors += 1
        before = self._cleanups_run
        try:
            self.sample()
        except Exception:
            logger.exception("memory sample failed")
        if self._level != "normal":
            self.run_cleanup_hooks()
        return self._cleanups_run > before

    # -- stats --------------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """The figures in the module docstring's table. Does not sample."""
        self._prune_closed()
        keys = ("tasks_active", "timers_active", "listeners_active", "retained_bytes")
        names = set(self._opened_by_name)
        per: dict[str, dict[str, int]] = {
            name: {
                "scopes_open": 0,
                "scopes_closed": self._closed_by_name[name],
                "scopes_leaking": 0,
                **dict.fromkeys(keys, 0),
            }
            for name in sorted(names)
        }
        for scope in (*self._open.values(), *self._closed.values()):
            figures = per[scope.component]
            s = scope.get_stats()
            for key in keys:
                figures[key] += s[key]
            figures["scopes_leaking" if scope.closed else "scopes_open"] += 1
        slope = self.trend_slope_mb_per_s()
        return {
            "rss_mb": self._rss_mb,
            "peak_rss_mb": self.peak_rss_mb(),
            "level": self._level,
            "trend": self.trend(),
            "trend_mb_per_s": slope,
            "samples": self._samples_taken,
            "tracking": self.tracking,
            "scopes_open": len(self._open),
            "scopes_closed": sum(self._closed_by_name.values()),
            "scopes_leaking": len(self._closed),
            "close_stragglers": self._stragglers,
            "cleanups_run": self._cleanups_run,
            "cleanups_skipped": self._cleanups_skipped,
            "cleanup_errors": self._cleanup_errors,
            "boundary_errors_caught": self._boundary_errors,
            **{key: sum(p[key] for p in per.values()) for key in keys},
            "components": per,
        }
