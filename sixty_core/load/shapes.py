"""Load shapes as pure functions of elapsed time: ``plan(shape, t, users, spawn_rate,
duration_s)`` gives Locust's (user count, spawn rate) at ``t`` seconds, or None once the
run is over. ``loadtests/shapes.py`` wraps this in a ``LoadTestShape``; the harness uses
the names to refuse an unknown ``--shape`` before anything starts.

- ``steady``: ramp to ``users`` at ``spawn_rate``, hold until the end;
- ``ramp``: climb linearly from 1 to ``users`` across the whole run, in whole users;
- ``spike``: a quarter of ``users`` (at least 1), all of them from 40% to 60% of the run,
  spawned as fast as Locust can, then back to the quarter;
- ``soak``: ``steady`` meant for long runs (its default duration is ten minutes), where
  slow leaks and pool churn show.
"""

from __future__ import annotations

import math

SHAPES = ("steady", "ramp", "spike", "soak")
DEFAULT_DURATION_S = {"steady": 60.0, "ramp": 60.0, "spike": 60.0, "soak": 600.0}


def check_shape(name: str) -> str:
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}: choose one of {', '.join(SHAPES)}")
    return name


def plan(
    shape: str, t: float, users: int, spawn_rate: float, duration_s: float
) -> tuple[int, float] | None:
    """(user count, spawn rate) for ``t`` seconds into a run of ``shape``; None after
    ``duration_s`` (every shape ends)."""
    check_shape(shape)
    if t >= duration_s:
        return None
    if shape in ("steady", "soak"):
        return users, spawn_rate
    if shape == "ramp":
        climbed = 1 + math.floor((users - 1) * t / duration_s)
        return max(1, min(users, climbed)), max(spawn_rate, float(users))
    base = max(1, users // 4)
    if 0.4 * duration_s <= t < 0.6 * duration_s:
        return users, float(max(users, spawn_rate))
    return base, float(max(users, spawn_rate))
