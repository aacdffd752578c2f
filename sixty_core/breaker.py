"""A circuit breaker for the edge upstream: closed, open, half-open.

The breaker counts *consecutive* failures. After ``failure_threshold`` of them it opens and
rejects every call for ``reset_timeout_s``; then it turns half-open and lets exactly one
trial call through. The trial's success closes the breaker, its failure opens it again for
another ``reset_timeout_s``.

The breaker is a plain state machine for one event loop (no locks, no awaits): callers ask
:meth:`CircuitBreaker.allow` (or :meth:`~CircuitBreaker.before_call`) before each upstream
call and report the outcome with :meth:`~CircuitBreaker.record_success`,
:meth:`~CircuitBreaker.record_failure` or, for a call that ended with no verdict (its task
was cancelled), :meth:`~CircuitBreaker.record_abandoned`.

Stats (:meth:`CircuitBreaker.get_stats`):

=====================  =====================================================================
key                    meaning
=====================  =====================================================================
``breaker_state``      ``"closed"``, ``"open"`` or ``"half_open"``
``breaker_opens``      times the breaker went to open (from closed or from half-open)
``breaker_rejections`` calls refused because the breaker was open or its trial was taken
``breaker_failures``   failures recorded, in any state
=====================  =====================================================================
"""

from __future__ import annotations

import enum
import time
from typing import Any

from sixty_core.errors import CircuitOpenError
from sixty_core.types import Clock

DEFAULT_FAILURE_THRESHOLD = 5
#: Open this long, then one trial. Short enough that creates go back to the edge within
#: RELIABILITY.md's 5 s recovery target once it heals (scenario E5 measured 9.8 s with 10 s);
#: while open, creates are served by the fallback, so a failing edge still sees at most one
#: call per reset period.
DEFAULT_RESET_TIMEOUT_S = 4.0


class BreakerState(enum.Enum):
    """Where the breaker stands; the value is the name used in stats."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Fail fast after repeated upstream failures, probe again after a pause.

    ``failure_threshold`` consecutive failures open the breaker; ``reset_timeout_s`` later the
    next :meth:`allow` turns it half-open and grants one trial call. While that trial is in
    flight every other call is rejected. A trial that never reports back (its caller vanished
    without calling :meth:`record_abandoned`) is presumed lost after another
    ``reset_timeout_s``, so the breaker can never stay stuck in half-open.

    Outcomes reported while open (a call admitted before the breaker opened and finishing
    late) count in ``breaker_failures`` but change no state: only the trial decides.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout_s: float = DEFAULT_RESET_TIMEOUT_S,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not reset_timeout_s >= 0:
            raise ValueError(f"reset_timeout_s must be >= 0, got {reset_timeout_s}")
        self._failure_threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        # When the half-open trial was granted; None when no trial is in flight.
        self._trial_started_at: float | None = None
        self._opens = 0
        self._rejections = 0
        self._failures = 0

    @property
    def state(self) -> BreakerState:
        """The current state, without advancing it (see :meth:`allow` for that)."""
        return self._state

    def allow(self) -> bool:
        """Return whether a call may go to the upstream now; count a rejection if not.

        This has side effects: once ``reset_timeout_s`` has passed since opening, the first
        call turns the breaker half-open and takes the single trial slot, so a caller that
        gets ``True`` must report the outcome.
        """
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at >= self._reset_timeout_s:
                self._state = BreakerState.HALF_OPEN
                self._trial_started_at = now
                return True
        elif self._trial_started_at is None or (
            now - self._trial_started_at >= self._reset_timeout_s
        ):
            # Half-open with no trial in flight, or a trial presumed lost: grant a new one.
            self._trial_started_at = now
            return True
        self._rejections += 1
        return False

    def before_call(self) -> None:
        """Like :meth:`allow`, but raise :class:`CircuitOpenError` instead of returning False."""
        if not self.allow():
            raise CircuitOpenError(
                f"edge circuit breaker is {self._state.value}: "
                f"{self._consecutive_failures} consecutive failures, "
                f"retry after {self._retry_after_s():.3f}s"
            )

    def record_success(self) -> None:
        """Report a call that succeeded: resets the failure streak; closes a half-open breaker."""
        if self._state is BreakerState.OPEN:
            return
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._trial_started_at = None

    def record_failure(self) -> None:
        """Report a call that failed: may open a closed breaker; reopens a half-open one."""
        self._failures += 1
        if self._state is BreakerState.OPEN:
            return
        self._consecutive_failures += 1
        if (
            self._state is BreakerState.HALF_OPEN
            or self._consecutive_failures >= self._failure_threshold
        ):
            self._open()

    def record_abandoned(self) -> None:
        """Report a call that ended with no verdict (cancelled): frees the half-open trial."""
        if self._state is BreakerState.HALF_OPEN:
            self._trial_started_at = None

    def get_stats(self) -> dict[str, Any]:
        """Return the counters documented in the module table (a fresh dict)."""
        return {
            "breaker_state": self._state.value,
            "breaker_opens": self._opens,
            "breaker_rejections": self._rejections,
            "breaker_failures": self._failures,
        }

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._trial_started_at = None
        self._opens += 1

    def _retry_after_s(self) -> float:
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self._reset_timeout_s - self._clock())
        if self._trial_started_at is not None:
            return max(0.0, self._trial_started_at + self._reset_timeout_s - self._clock())
        return 0.0

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self._state.value} "
            f"failures={self._consecutive_failures}/{self._failure_threshold}>"
        )
