"""``sixty run``: from nothing to ``results.json`` and the report (DESIGN §7).

Provision Postgres once, migrate and seed a template database once, then for each profile,
each on its own fresh copy of the template (so every profile starts from the same rows):

1. the load run of the standard scenario (:mod:`sixty_core.harness.load`), raw samples
   streamed to disk while ``/metrics`` and the RSS are sampled;
2. the statement probe (:mod:`sixty_core.harness.probe`): statements per request per
   endpoint, one request at a time, deterministic;
3. the memray leak run (:mod:`sixty_core.harness.leaks`);

then the benchmark suites once for legacy and optimized (:mod:`sixty_core.harness.bench`),
and ``results.json`` (:mod:`sixty_core.harness.results`) with the environment fingerprint.
The report is rendered from that file alone.

Every step is bounded by the step's own limits (Locust's run time plus grace, the leak
run's request timeouts, the bench's timeout). Nothing is written over an earlier run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

import sixty_core
from sixty_core.db import workflow
from sixty_core.db.provision import provision
from sixty_core.db.seed import seeded_owners
from sixty_core.db.template import clone, create_database, drop_database
from sixty_core.harness import bench, leaks, load, probe, records
from sixty_core.harness.fingerprint import fingerprint
from sixty_core.harness.results import (
    SCHEMA,
    BenchRecord,
    Fingerprint,
    LeakRecord,
    LoadRecord,
    Method,
    ProfileRecord,
    Results,
    StatementCount,
    Step,
    write,
)
from sixty_core.harness.rundir import prepare_run_dir
from sixty_core.harness.servers import Supervisor
from sixty_core.load.scenario import STANDARD, Scenario
from sixty_core.profiles import FLAGS
from sixty_core.settings import Settings

#: ``--quick``: the CI budget (under 4 minutes for legacy and optimized on 2 cores).
QUICK_DURATION_S = 20.0
#: The leak run's warm-up fills what is bounded (see ``leaks.WARMUP_CYCLES``); --quick
#: tracks fewer cycles after it, never fewer than the three the growth rule needs.
QUICK_LEAK_CYCLES = 36
PROBE_REPEATS = 5
BENCH_PROFILES = ("legacy", "optimized")


@dataclass(frozen=True)
class RunOptions:
    out: Path
    profiles: tuple[str, ...] = ("legacy", "optimized")
    quick: bool = False
    ablations: bool = False
    bench: bool = True
    leaks: bool = True
    scenario: Scenario = STANDARD
    progress: bool = True
    #: Test faults switched on per profile (``sixty selftest``'s known regressions).
    test_faults: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Given the results so far, the profiles whose load figures are to be measured once
    #: more and pooled with the first run (the gate's re-measure of inconclusive figures).
    remeasure: Callable[[Results], set[str]] | None = None

    def all_profiles(self) -> tuple[str, ...]:
        """The profiles to run: as given, then one ``optimized-no-FLAG`` per flag."""
        extra = [f"optimized-no-{flag}" for flag in FLAGS] if self.ablations else []
        return tuple(dict.fromkeys([*self.profiles, *extra]))

    def run_scenario(self) -> Scenario:
        if self.quick:
            return self.scenario.with_overrides(
                duration_s=min(QUICK_DURATION_S, self.scenario.duration_s)
            )
        return self.scenario

    def leak_cycles(self) -> tuple[int, int]:
        return (QUICK_LEAK_CYCLES if self.quick else leaks.DEFAULT_CYCLES), leaks.WARMUP_CYCLES


_clone_ids = itertools.count(1)


def _clone_name(stem: str) -> str:
    return f"sixty_run_{os.getpid()}_{stem}_{next(_clone_ids)}"


@dataclass(frozen=True)
class ProfileSteps:
    """The measuring steps of one pipeline, each on its own fresh clone of ``template``
    (a database on the server at ``admin_dsn``)."""

    options: RunOptions
    scenario: Scenario
    settings: Settings
    admin_dsn: str
    template: str
    console: Console
    log: workflow.StepLog

    async def load(self, profile: str, faults: frozenset[str], folder: str = "load") -> LoadRecord:
        run_dir = self.options.out / profile / folder
        async with clone(self.admin_dsn, self.template, _clone_name("load")) as dsn:
            with self.log.step(f"load {profile}"):
                outcome = await load.run(
                    load.LoadOptions(
                        scenario=self.scenario,
                        shape="steady",
                        out=run_dir,
                        profile=profile,
                        progress=self.options.progress,
                        dsn=dsn,
                        inject=faults,
                    ),
                    self.settings,
                    self.console,
                    self.log,
                )
        for line in load.headline(outcome):
            self.console.print(f"  {line}")
        return records.load_record(outcome, run_dir, self.options.out)

    async def probe(self, profile: str, faults: frozenset[str]) -> list[StatementCount]:
        owners = seeded_owners(self.settings.seed_scale, self.settings.seed)
        owner = next(o for o in owners if not o.is_admin)
        async with clone(self.admin_dsn, self.template, _clone_name("probe")) as dsn:
            supervisor = Supervisor(
                dsn, profile, time_scale=self.settings.time_scale, test_faults=faults
            )
            with self.log.step(f"probe {profile}"):
                await asyncio.to_thread(supervisor.start)
                try:
                    counts = await asyncio.to_thread(
                        probe.probe,
                        supervisor.service_url,
                        owner.token,
                        owner.id,
                        repeats=PROBE_REPEATS,
                    )
                finally:
                    await asyncio.to_thread(supervisor.stop)
        return records.statement_counts(counts)

    async def leaks(self, profile: str, faults: frozenset[str]) -> LeakRecord:
        run_dir = self.options.out / profile / "leaks"
        cycles, warmup = self.options.leak_cycles()
        async with clone(self.admin_dsn, self.template, _clone_name("leaks")) as dsn:
            with self.log.step(f"leaks {profile}"):
                outcome = await leaks.run(
                    leaks.LeakOptions(
                        profile=profile,
                        out=run_dir,
                        cycles=cycles,
                        warmup=warmup,
                        inject=faults,
                        progress=self.options.progress,
                        dsn=dsn,
                        # --quick: the verdicts without the peak's allocators, a pass
                        # over the capture that costs about 15 s per profile.
                        peak_allocators=not self.options.quick,
                    ),
                    self.settings,
                    self.console,
                    self.log,
                )
        for line in leaks.summary(outcome):
            self.console.print(f"  {line}")
        return records.leak_record(outcome, run_dir, self.options.out)


async def run(
    options: RunOptions, settings: Settings, console: Console, log: workflow.StepLog
) -> Path:
    """Run the pipeline; return the path of ``results.json`` under ``options.out``."""
    out = options.out
    prepare_run_dir(out)
    scenario = options.run_scenario()
    settings = replace(
        settings, seed_scale=scenario.seed_scale, seed=scenario.seed, time_scale=scenario.time_scale
    )
    started = time.monotonic()
    profiles = options.all_profiles()
    record_list: list[ProfileRecord] = []
    async with provision(settings) as database:
        template = _clone_name("template")
        with log.step("seed template"):
            template_dsn = await create_database(database.dsn, template)
            await workflow.migrate_and_seed(
                template_dsn, scale=settings.seed_scale, seed_value=settings.seed, log=log
            )
        steps = ProfileSteps(options, scenario, settings, database.dsn, template, console, log)
        try:
            for index, profile in enumerate(profiles, 1):
                console.rule(f"[bold]{profile}[/] ({index}/{len(profiles)})")
                faults = options.test_faults.get(profile, frozenset())
                record = ProfileRecord(profile=profile, test_faults=sorted(faults))
                record.load = await steps.load(profile, faults)
                record.statements = await steps.probe(profile, faults)
                if options.leaks:
                    record.leaks = await steps.leaks(profile, faults)
                record_list.append(record)
            env = await fingerprint(template_dsn, database.backend, sixty_core.SOURCE_ROOT)
            if options.remeasure is not None:
                interim = _results(options, scenario, env, database.backend, record_list, None)
                again_for = options.remeasure(interim)
                for record in record_list:
                    if record.profile not in again_for or record.load is None:
                        continue
                    console.rule(f"[bold]{record.profile}[/]: re-measured once (inconclusive)")
                    again = await steps.load(
                        record.profile, frozenset(record.test_faults), folder="load-2"
                    )
                    record.load = records.pool_loads(record.load, again)
        finally:
            await drop_database(database.dsn, template)
    bench_record = None
    bench_profiles = tuple(p for p in BENCH_PROFILES if p in profiles)
    if options.bench and bench_profiles:
        console.rule("[bold]benchmarks[/]")
        with log.step("bench"):
            bench_json = await asyncio.to_thread(
                bench.run_bench,
                bench.BenchOptions(quick=options.quick, profiles=bench_profiles, out=out / "bench"),
                console,
            )
        bench_record = records.bench_record(bench_json, out, quick=options.quick)
    results = _results(options, scenario, env, database.backend, record_list, bench_record)
    results.steps = [Step(name, seconds) for name, seconds in log.steps]
    results.wall_s = time.monotonic() - started
    path = out / "results.json"
    write(results, path)
    return path


def _results(
    options: RunOptions,
    scenario: Scenario,
    env: Fingerprint,
    backend: str,
    profiles: list[ProfileRecord],
    bench_record: BenchRecord | None,
) -> Results:
    cycles, warmup = options.leak_cycles()
    return Results(
        schema=SCHEMA,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        fingerprint=env,
        method=Method(
            scenario=scenario,
            shape="steady",
            quick=options.quick,
            leak_cycles=cycles if options.leaks else 0,
            leak_warmup=warmup if options.leaks else 0,
            db_backend=backend,
            template_clone=True,
        ),
        profiles=profiles,
        bench=bench_record,
    )
