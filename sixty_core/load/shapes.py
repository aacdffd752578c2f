"""Load shapes as pure functions of elapsed time: ``plan(shape, t, users, spawn_rate,
duration_s)`` gives Locust's (user count, spawn rate) at ``t`` seconds, or None once the
run is over. ``loadtests/shapes.py`` wraps this in a ``LoadTestShape``; the harness uses
the names to refuse an unknown ``--shape`` before anything starts.

- ``steady``: ramp to ``users`` at ``spawn_rate``, hold until the end;
- ``ramp``: climb linearly from 1 to ``users`` across the whole run, in whole users;
- ``spike``: a quarter of ``users`` (at least 1), all of them from 40% to 60% of the run,
  spawned as fast as Locust can, then back to the quarter;
- ``soak``: ``steady`` meant for long runs (its default duration is ten minutes), where
  slow leaks and pool churn show;
- ``steps``: the user counts of ``steps`` (e.g. 10, 20, 50), each held for an equal share
  of the run and reached as fast as Locust can spawn: the load sweep of ``sixty scale``.
"""

from __future__ import annotations

import itertools
import math

SHAPES = ("steady", "ramp", "spike", "soak", "steps")
DEFAULT_DURATION_S = {"steady": 60.0, "ramp": 60.0, "spike": 60.0, "soak": 600.0, "steps": 120.0}
#: The ``steps`` shape's user counts when none are given.
DEFAULT_STEPS = (10, 25, 50, 100, 200, 400)
#: Largest user count one step may ask for (Locust on this kind of machine tops out far
#: below; a typo such as 20000 is refused rather than run).
MAX_STEP_USERS = 5000


def check_shape(name: str) -> str:
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}: choose one of {', '.join(SHAPES)}")
    return name


def parse_steps(text: str) -> tuple[int, ...]:
    """``"10,20,50"`` -> ``(10, 20, 50)``: at least one step, each a whole number of users
    from 1 to :data:`MAX_STEP_USERS`, strictly rising; ValueError saying what is wrong."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("give the load steps as user counts, e.g. 10,20,50")
    try:
        steps = tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(f"load steps must be whole numbers of users, got {text!r}") from None
    if any(not 1 <= users <= MAX_STEP_USERS for users in steps):
        raise ValueError(f"each load step must be 1 to {MAX_STEP_USERS} users, got {text!r}")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(f"load steps must rise, got {text!r}")
    return steps


def step_windows(steps: tuple[int, ...], duration_s: float) -> list[tuple[int, float, float]]:
    """(users, start s, end s) of each step of a ``steps`` run lasting ``duration_s``."""
    length = duration_s / len(steps)
    return [(users, i * length, (i + 1) * length) for i, users in enumerate(steps)]


def plan(
    shape: str,
    t: float,
    users: int,
    spawn_rate: float,
    duration_s: float,
    steps: tuple[int, ...] = DEFAULT_STEPS,
) -> tuple[int, float] | None:
    """(user count, spawn rate) for ``t`` seconds into a run of ``shape``; None after
    ``duration_s`` (every shape ends). ``steps`` is read by the ``steps`` shape only."""
    check_shape(shape)
    if t >= duration_s:
        return None
    if shape == "steps":
        index = min(len(steps) - 1, int(t * len(steps) / duration_s))
        return steps[index], float(max(steps[index], spawn_rate))
    if shape in ("steady", "soak"):
        return users, spawn_rate
    if shape == "ramp":
        climbed = 1 + math.floor((users - 1) * t / duration_s)
        return max(1, min(users, climbed)), max(spawn_rate, float(users))
    base = max(1, users // 4)
    if 0.4 * duration_s <= t < 0.6 * duration_s:
        return users, float(max(users, spawn_rate))
    return base, float(max(users, spawn_rate))
