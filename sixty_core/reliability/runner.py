"""Run the scenarios against each profile and write ``reliability.json``.

Postgres is provisioned once and one template is seeded; every scenario of every profile
gets its own ``CREATE DATABASE ... TEMPLATE`` copy and its own stack (service, edge, two
fault proxies), so no fault or write of one scenario reaches the next. A scenario that
raises or overruns its bound is an outcome with that finding, not a crash of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from sixty_core.db import workflow
from sixty_core.db.provision import provision
from sixty_core.db.template import clone, create_database, drop_database
from sixty_core.harness.rundir import make_folder
from sixty_core.profiles import resolve_profile
from sixty_core.reliability import sql_scan
from sixty_core.reliability.catalog import Scenario
from sixty_core.reliability.outcome import Outcome, Trial
from sixty_core.reliability.scorecard import (
    SCHEMA,
    ReliabilityRecord,
    scorecard,
    write,
)
from sixty_core.reliability.stack import running_stack
from sixty_core.settings import Settings

#: The seed the scenarios run on: scale 1 (5 owners, 500 deals) is enough to hold every
#: fault, and keeps each template copy instant.
SEED_SCALE = 1
#: Legacy's create retries back off 1-2-4-8 s times this, so an edge scenario on legacy
#: takes seconds, not a minute; the deadlines compared against are the profile's own.
TIME_SCALE = 0.1
#: No scenario may take longer than this (a black hole waits a whole command_timeout).
SCENARIO_BOUND_S = 120.0

_ids = itertools.count(1)


@dataclass(frozen=True)
class ReliabilityOptions:
    out: Path
    profiles: tuple[str, ...]
    scenarios: tuple[Scenario, ...]
    quick: bool = False


def scenario_settings(settings: Settings) -> Settings:
    """The service settings every scenario runs with (monitor timers out of the way)."""
    return replace(
        settings,
        time_scale=TIME_SCALE,
        session_monitor_period_s=3600.0,
        application_name=f"sixty_rel_{os.getpid()}",
    )


async def run_scenario(
    scenario: Scenario, profile: str, dsn: str, settings: Settings, *, seed: int
) -> Outcome:
    """``scenario`` on ``profile`` against the seeded database at ``dsn``."""
    trial = Trial(scenario.id, scenario.title, scenario.kind, profile)
    try:
        async with asyncio.timeout(SCENARIO_BOUND_S):
            async with running_stack(
                dsn,
                resolve_profile(profile),
                seed_scale=SEED_SCALE,
                seed=seed,
                settings=scenario_settings(settings),
            ) as stack:
                await scenario.run(stack, trial)
    except TimeoutError:
        trial.expect(False, f"the scenario did not finish within {SCENARIO_BOUND_S:.0f} s")
    except Exception as exc:  # a scenario's crash is a finding about the service or harness
        trial.expect(False, f"the scenario raised {type(exc).__name__}: {exc}")
    return trial.outcome()


async def run(
    options: ReliabilityOptions,
    settings: Settings,
    *,
    on_outcome: Callable[[Outcome], None] = lambda _: None,
) -> Path:
    """Run every scenario on every profile; return the path of ``reliability.json``. The
    faults' expected log noise (refused reconnects, cancelled requests) goes to
    ``scenarios.log`` beside it, not to the terminal."""
    started = time.monotonic()
    make_folder(options.out)
    outcomes: list[Outcome] = []
    with _logs_to(options.out / "scenarios.log"):
        await _run_all(options, settings, outcomes, on_outcome)
    scan = sql_scan.scan(Path(sql_scan.__file__).parent.parent)
    record = ReliabilityRecord(
        schema=SCHEMA,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        profiles=list(options.profiles),
        quick=options.quick,
        outcomes=outcomes,
        scorecards=[
            scorecard(p, outcomes, sql_call_sites=scan.call_sites, sql_findings=len(scan.findings))
            for p in options.profiles
        ],
        sql_findings=[f"{f.path}:{f.line} {f.call}: {f.reason}" for f in scan.findings],
        sql_call_sites=scan.call_sites,
        wall_s=time.monotonic() - started,
    )
    path = options.out / "reliability.json"
    write(record, path)
    return path


async def _run_all(
    options: ReliabilityOptions,
    settings: Settings,
    outcomes: list[Outcome],
    on_outcome: Callable[[Outcome], None],
) -> None:
    async with provision(settings) as database:
        template = f"sixty_rel_{os.getpid()}_tpl"
        template_dsn = await create_database(database.dsn, template)
        try:
            await workflow.migrate_and_seed(
                template_dsn, scale=SEED_SCALE, seed_value=settings.seed, log=workflow.StepLog()
            )
            for profile in options.profiles:
                for scenario in options.scenarios:
                    name = f"sixty_rel_{os.getpid()}_{next(_ids)}"
                    async with clone(database.dsn, template, name) as dsn:
                        outcome = await run_scenario(
                            scenario, profile, dsn, settings, seed=settings.seed
                        )
                    outcomes.append(outcome)
                    on_outcome(outcome)
        finally:
            await drop_database(database.dsn, template)


#: Loggers the faults make talk: asyncpg's refill warnings, uvicorn's cancelled requests.
_NOISY_LOGGERS = ("asyncio", "asyncpg", "uvicorn", "uvicorn.error", "sixty_core")


class _KeptOpen(logging.FileHandler):
    """A file handler that stays open until :meth:`close_now`. uvicorn applies its logging
    config each time a server starts (every scenario's stack), and ``dictConfig`` closes
    every handler there is; this one would then reopen its file on the next record, a new
    fd that a scenario's leak check would count as the service's."""

    def close(self) -> None:
        self.flush()

    def close_now(self) -> None:
        super().close()


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """Send the noisy loggers to ``path`` (not the terminal) while the scenarios run."""
    handler = _KeptOpen(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    saved = []
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, logger.handlers[:]))
        logger.handlers = [handler]
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate, handlers in saved:
            logger.handlers = handlers
            logger.propagate = propagate
        handler.close_now()
