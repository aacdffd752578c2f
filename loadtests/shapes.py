"""The load shapes (``steady``, ``ramp``, ``spike``, ``soak``, ``steps``) as one Locust
``LoadTestShape`` that follows ``--sixty-shape`` (and ``--sixty-steps`` for ``steps``).

It uses Locust's common options (``-u``, ``-r``, ``-t``, or the web UI's fields) for users,
spawn rate and duration; without a run time it takes the shape's default, so every run
ends by itself. The arithmetic lives in :mod:`sixty_core.load.shapes`.
"""

from __future__ import annotations

from locust import LoadTestShape

from sixty_core.load.scenario import STANDARD
from sixty_core.load.shapes import DEFAULT_DURATION_S, DEFAULT_STEPS, parse_steps, plan


class SixtyShape(LoadTestShape):
    """Delegates each tick to :func:`sixty_core.load.shapes.plan`."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        shape = getattr(options, "sixty_shape", None) or "steady"
        users = int(getattr(options, "num_users", None) or STANDARD.users)
        spawn_rate = float(getattr(options, "spawn_rate", None) or STANDARD.spawn_rate)
        duration_s = float(getattr(options, "run_time", None) or DEFAULT_DURATION_S[shape])
        text = getattr(options, "sixty_steps", None)
        steps = parse_steps(text) if text else DEFAULT_STEPS
        return plan(shape, self.get_run_time(), users, spawn_rate, duration_s, steps)
