"""``sixty scale``: how each profile's cost grows with the data and with the load.

**Data-size sweep.** For each seed scale, one template database is migrated and seeded;
each profile then runs on its own fresh clone of it: a short fixed Locust run of the
standard scenario (only its duration and seed scale differ from ``sixty run``'s) and the
statement probe. Per endpoint it keeps p50/p99 (every sample, bootstrap intervals),
req/s, statements of a cold request and the response size; per run the service's VmHWM.
Each metric's growth exponent over the deal count is fitted in
:mod:`sixty_core.harness.growth`.

**Load sweep.** Per profile, one Locust run of the ``steps`` shape on a fresh clone at
``load_scale``: each user count held for ``step_s``, its first ``settle_s`` dropped; per
step the throughput and p99 of every request but the feed stream (a stream's "latency"
is how long a viewer watched). The saturation step and the best throughput within the
p99 budget follow from those.

Against ``--host`` (a deployed service) the load sweep drives that service, and the data
sweep measures the one scale it was seeded with: a remote service's data size cannot be
changed from here. ``--dsn`` puts the templates on an existing Postgres server (the role
needs CREATEDB). Every record says where the load, the service and the database were.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
from rich.console import Console

from sixty_core.db import workflow
from sixty_core.db.provision import Database, provision, redact_dsn
from sixty_core.db.seed import DEALS_PER_SCALE
from sixty_core.db.template import clone, create_database, drop_database
from sixty_core.errors import SixtyError
from sixty_core.harness import growth, load
from sixty_core.harness.records import relative
from sixty_core.harness.results import StatementCount
from sixty_core.harness.run import ProfileSteps, RunOptions
from sixty_core.harness.rundir import prepare_run_dir
from sixty_core.harness.scaling_results import (
    CURVE_METRICS,
    DEFAULT_DURATION_S,
    DEFAULT_P99_BUDGET_MS,
    DEFAULT_SCALES,
    DEFAULT_STEP_S,
    SCHEMA,
    GrowthCurve,
    GrowthPoint,
    LoadSweep,
    ScalingRecord,
    StepPoint,
    Where,
    write,
)
from sixty_core.load import samples as sample_files
from sixty_core.load.samples import ACTION, Sample
from sixty_core.load.scenario import STANDARD, Scenario
from sixty_core.load.shapes import DEFAULT_STEPS
from sixty_core.load.stats import bootstrap_percentile, percentile, run_window_s
from sixty_core.settings import Settings

#: An endpoint needs this many requests at every scale for its latency curve.
MIN_REQUESTS = 10
#: Requests left out of the load sweep's figures: the feed stream (held open for as long
#: as a viewer watches, so its duration is no latency).
STREAM_SUFFIX = "/stream"

_names = itertools.count(1)


def _db_name(stem: str) -> str:
    return f"sixty_scale_{os.getpid()}_{stem}_{next(_names)}"


@dataclass(frozen=True)
class ScaleOptions:
    out: Path
    scales: tuple[int, ...] = DEFAULT_SCALES
    profiles: tuple[str, ...] = ("legacy", "optimized")
    duration_s: float = DEFAULT_DURATION_S
    #: User counts of the load sweep; empty: no load sweep.
    load_steps: tuple[int, ...] = DEFAULT_STEPS
    step_s: float = DEFAULT_STEP_S
    #: Seed scale of the load sweep (default the standard scenario's).
    load_scale: int = STANDARD.seed_scale
    p99_budget_ms: float = DEFAULT_P99_BUDGET_MS
    #: A deployed service to drive instead of starting one per profile.
    host: str | None = None
    #: Local Locust worker processes (0: one Locust process).
    workers: int = 0
    #: Load-sweep workers on other machines, and where the master listens for them.
    remote_workers: int = 0
    master_bind: str = "0.0.0.0:5557"
    scenario: Scenario = STANDARD
    progress: bool = True

    @property
    def settle_s(self) -> float:
        """The part of each step left out as its ramp: a third, at most 10 s."""
        return min(self.step_s / 3, 10.0)

    def check(self) -> None:
        if not self.scales or any(not 1 <= s <= 1000 for s in self.scales):
            raise SixtyError("--scales must be seed scales from 1 to 1000, e.g. 1,10,100")
        if len(set(self.scales)) != len(self.scales):
            raise SixtyError("--scales must not repeat a scale")
        if len(self.scales) < 2 and not self.load_steps:
            raise SixtyError(
                "nothing to sweep: a growth curve needs two or more --scales, and --load-steps "
                "none leaves no load sweep"
            )
        if self.host is not None and len(self.scales) > 1:
            raise SixtyError(
                "a deployed service (--host) holds one data size: give --scales with the one "
                "it was seeded at, or drop --host to sweep data sizes on a local service"
            )
        if not 5 <= self.duration_s <= 600:
            raise SixtyError(f"--duration must be 5 to 600 s, got {self.duration_s:g}")
        if self.load_steps and not 6 <= self.step_s <= 600:
            raise SixtyError(f"--step-s must be 6 to 600 s, got {self.step_s:g}")
        if self.p99_budget_ms <= 0:
            raise SixtyError("--p99-budget-ms must be above 0")


def where(options: ScaleOptions, database: Database | None) -> Where:
    load_part = "Locust on this machine" + (
        f", {options.workers} worker processes" if options.workers else ", one process"
    )
    if options.remote_workers:
        load_part += (
            f"; load sweep also from {options.remote_workers} remote worker(s) via "
            f"{options.master_bind}"
        )
    service = options.host or "started here per profile (loopback)"
    if database is None:
        db = "the deployed service's own"
    elif database.backend == "url":
        db = f"existing Postgres at {redact_dsn(database.dsn)}"
    else:
        db = f"{database.backend} Postgres started here"
    return Where(load=load_part, service=service, database=db)


async def sweep(
    options: ScaleOptions, settings: Settings, console: Console, log: workflow.StepLog
) -> Path:
    """Run the sweeps ``options`` ask for; write ``scale.json`` under ``options.out`` and
    return its path."""
    options.check()
    prepare_run_dir(options.out)
    started = time.monotonic()
    curves: list[GrowthCurve] = []
    sweeps: list[LoadSweep] = []
    if options.host is not None:
        profiles = [await _host_profile(options)]
        database = None
        if options.load_steps:
            sweeps = [await _host_load_sweep(options, settings, console, log)]
    else:
        profiles = list(options.profiles)
        async with provision(settings) as database:
            if len(options.scales) >= 2:
                points = await _data_points(options, settings, database.dsn, console, log)
                curves = fit_curves(points, options.out)
            if options.load_steps:
                sweeps = await _load_sweeps(options, settings, database.dsn, console, log)
    record = ScalingRecord(
        schema=SCHEMA,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        scenario=options.scenario.with_overrides(duration_s=options.duration_s),
        scales=list(options.scales),
        profiles=profiles,
        where=where(options, database),
        curves=curves,
        sweeps=sweeps,
        wall_s=time.monotonic() - started,
    )
    path = options.out / "scale.json"
    write(record, path)
    return path


@dataclass
class ScalePoint:
    """What one profile measured at one scale: its run folder, samples, probe, VmHWM."""

    profile: str
    scale: int
    deals: int
    run_dir: Path
    samples: list[Sample]
    statements: list[StatementCount]
    peak_rss_mb: float | None


def _scale_settings(settings: Settings, scenario: Scenario) -> Settings:
    return replace(
        settings, seed_scale=scenario.seed_scale, seed=scenario.seed, time_scale=scenario.time_scale
    )


async def _data_points(
    options: ScaleOptions,
    settings: Settings,
    admin_dsn: str,
    console: Console,
    log: workflow.StepLog,
) -> list[ScalePoint]:
    points: list[ScalePoint] = []
    for scale in options.scales:
        scenario = msgspec.structs.replace(
            options.scenario.with_overrides(duration_s=options.duration_s), seed_scale=scale
        )
        scaled = _scale_settings(settings, scenario)
        template = _db_name(f"tpl{scale}")
        console.rule(f"[bold]scale {scale}[/] ({scale * DEALS_PER_SCALE:,} deals)")
        with log.step(f"seed scale {scale}"):
            template_dsn = await create_database(admin_dsn, template)
            report = await workflow.migrate_and_seed(
                template_dsn, scale=scale, seed_value=scenario.seed, log=workflow.StepLog()
            )
        console.print(f"  seeded {report.total_rows:,} rows in {report.seconds:.1f} s")
        try:
            steps = ProfileSteps(
                RunOptions(out=options.out / f"scale-{scale}", progress=options.progress),
                scenario,
                scaled,
                admin_dsn,
                template,
                console,
                log,
            )
            for profile in options.profiles:
                record = await steps.load(profile, frozenset())
                statements = await steps.probe(profile, frozenset())
                run_dir = options.out / f"scale-{scale}" / profile / "load"
                points.append(
                    ScalePoint(
                        profile=profile,
                        scale=scale,
                        deals=report.rows["deals"],
                        run_dir=run_dir,
                        samples=sample_files.read_dir(run_dir / "samples").samples,
                        statements=statements,
                        peak_rss_mb=record.peak_rss_mb,
                    )
                )
        finally:
            await drop_database(admin_dsn, template)
    return points


def _requests(samples: Sequence[Sample]) -> list[Sample]:
    """HTTP requests that have a latency: no user actions, no feed streams."""
    return [s for s in samples if s.kind != ACTION and not s.name.endswith(STREAM_SUFFIX)]


def _latencies(samples: Sequence[Sample], endpoint: str) -> list[float]:
    return [s.ms for s in samples if s.kind != ACTION and s.name == endpoint]


def fit_curves(points: Sequence[ScalePoint], base: Path) -> list[GrowthCurve]:
    """Every growth curve the data sweep's points support, fitted (see the module)."""
    curves: list[GrowthCurve] = []
    for profile in dict.fromkeys(p.profile for p in points):
        mine = sorted((p for p in points if p.profile == profile), key=lambda p: p.deals)
        if len({p.deals for p in mine}) < 2:
            continue
        dirs = [relative(p.run_dir, base) for p in mine]
        endpoints = [
            name
            for name in dict.fromkeys(s.name for s in _requests(mine[0].samples))
            if all(len(_latencies(p.samples, name)) >= MIN_REQUESTS for p in mine)
        ]
        for endpoint in endpoints:
            data = [_latencies(p.samples, endpoint) for p in mine]
            for metric, q in (("p50_ms", 50.0), ("p99_ms", 99.0)):
                estimates = [bootstrap_percentile(d, q) for d in data]
                curves.append(
                    _curve(
                        profile,
                        metric,
                        endpoint,
                        mine,
                        dirs,
                        [(e.value, e.low, e.high) for e in estimates],
                        samples=data,
                        statistic=q,
                    )
                )
            windows = [run_window_s(p.samples) for p in mine]
            rates = [len(d) / w if w > 0 else 0.0 for d, w in zip(data, windows, strict=True)]
            curves.append(_curve(profile, "rps", endpoint, mine, dirs, _plain(rates)))
        probed = [c.endpoint for c in mine[0].statements]
        for endpoint in probed:
            counts = [next((c for c in p.statements if c.endpoint == endpoint), None) for p in mine]
            if any(c is None for c in counts):
                continue
            statements = [float(c.first) for c in counts if c is not None]
            sizes = [c.response_bytes for c in counts if c is not None]
            curves.append(_curve(profile, "statements", endpoint, mine, dirs, _plain(statements)))
            curves.append(_curve(profile, "response_bytes", endpoint, mine, dirs, _plain(sizes)))
        if all(p.peak_rss_mb is not None for p in mine):
            rss = [float(p.peak_rss_mb or 0.0) for p in mine]
            curves.append(_curve(profile, "peak_rss_mb", None, mine, dirs, _plain(rss)))
    return curves


def _plain(values: Sequence[float]) -> list[tuple[float, float | None, float | None]]:
    return [(v, None, None) for v in values]


def _curve(
    profile: str,
    metric: str,
    endpoint: str | None,
    points: Sequence[ScalePoint],
    dirs: Sequence[str],
    values: Sequence[tuple[float, float | None, float | None]],
    *,
    samples: Sequence[Sequence[float]] | None = None,
    statistic: float | None = None,
) -> GrowthCurve:
    fit = growth.fit_exponent(
        [p.deals for p in points], [v for v, _, _ in values], samples=samples, statistic=statistic
    )
    return GrowthCurve(
        profile=profile,
        metric=metric,
        endpoint=endpoint,
        unit=CURVE_METRICS[metric],
        points=[
            GrowthPoint(p.scale, p.deals, v, low, high, d)
            for p, (v, low, high), d in zip(points, values, dirs, strict=True)
        ],
        exponent=fit.exponent,
        low=fit.low,
        high=fit.high,
        growth=fit.growth,
    )


def step_points(
    samples: Sequence[Sample], steps: Sequence[int], step_s: float, settle_s: float
) -> list[StepPoint]:
    """Per step, the requests that ended within its settled window (the step's start,
    counted from the run's first request, plus ``settle_s``, to the step's end)."""
    requests = _requests(samples)
    if not requests:
        return [StepPoint(u, 0.0, 0, 0, 0.0, 0.0, None, None, None, None) for u in steps]
    start = min(s.t for s in requests)
    ends = np.fromiter((s.t + s.ms / 1000 for s in requests), dtype=np.float64)
    ms = np.fromiter((s.ms for s in requests), dtype=np.float64)
    ok = np.fromiter((s.ok for s in requests), dtype=bool)
    out: list[StepPoint] = []
    for i, users in enumerate(steps):
        low, high = start + i * step_s + settle_s, start + (i + 1) * step_s
        inside = (ends >= low) & (ends < high)
        window = high - low
        count = int(inside.sum())
        failures = int((~ok[inside]).sum())
        latencies = ms[inside]
        p99 = bootstrap_percentile(latencies, 99.0) if count else None
        out.append(
            StepPoint(
                users=users,
                window_s=window,
                requests=count,
                failures=failures,
                rps=count / window,
                ok_rps=(count - failures) / window,
                p50_ms=percentile(latencies, 50.0) if count else None,
                p99_ms=p99.value if p99 else None,
                p99_low=p99.low if p99 else None,
                p99_high=p99.high if p99 else None,
            )
        )
    return out


def load_sweep_of(
    profile: str, scale: int, run_dir: Path, base: Path, options: ScaleOptions
) -> LoadSweep:
    """The load sweep of one run folder of the ``steps`` shape (its raw samples)."""
    steps = step_points(
        sample_files.read_dir(run_dir / "samples").samples,
        options.load_steps,
        options.step_s,
        options.settle_s,
    )
    figures = [
        growth.StepFigures(
            s.users, s.ok_rps, s.p99_ms, s.failures / s.requests if s.requests else 0.0
        )
        for s in steps
    ]
    saturated = growth.saturation_index(figures)
    best = growth.best_within_budget(figures, options.p99_budget_ms)
    return LoadSweep(
        profile=profile,
        scale=scale,
        step_s=options.step_s,
        settle_s=options.settle_s,
        dir=relative(run_dir, base),
        steps=steps,
        saturation_users=steps[saturated].users if saturated is not None else None,
        p99_budget_ms=options.p99_budget_ms,
        best_rps_within_budget=best.ok_rps if best else None,
        best_users_within_budget=best.users if best else None,
    )


def _sweep_load_options(
    options: ScaleOptions, run_dir: Path, *, profile: str | None, dsn: str | None
) -> load.LoadOptions:
    scenario = msgspec.structs.replace(
        options.scenario.with_overrides(
            users=max(options.load_steps),
            duration_s=options.step_s * len(options.load_steps),
        ),
        seed_scale=options.load_scale,
    )
    return load.LoadOptions(
        scenario=scenario,
        shape="steps",
        steps=options.load_steps,
        out=run_dir,
        profile=profile,
        host=options.host,
        workers=options.workers,
        remote_workers=options.remote_workers,
        master_bind=options.master_bind,
        progress=options.progress,
        dsn=dsn,
    )


async def _load_sweeps(
    options: ScaleOptions,
    settings: Settings,
    admin_dsn: str,
    console: Console,
    log: workflow.StepLog,
) -> list[LoadSweep]:
    template = _db_name("tplload")
    scaled = replace(settings, seed_scale=options.load_scale, seed=options.scenario.seed)
    with log.step(f"seed scale {options.load_scale} (load sweep)"):
        template_dsn = await create_database(admin_dsn, template)
        await workflow.migrate_and_seed(
            template_dsn,
            scale=options.load_scale,
            seed_value=options.scenario.seed,
            log=workflow.StepLog(),
        )
    sweeps: list[LoadSweep] = []
    try:
        for profile in options.profiles:
            console.rule(
                f"[bold]load sweep {profile}[/] ({', '.join(map(str, options.load_steps))} users)"
            )
            run_dir = options.out / "load-sweep" / profile
            async with clone(admin_dsn, template, _db_name("load")) as dsn:
                with log.step(f"load sweep {profile}"):
                    await load.run(
                        _sweep_load_options(options, run_dir, profile=profile, dsn=dsn),
                        scaled,
                        console,
                        log,
                    )
            sweeps.append(load_sweep_of(profile, options.load_scale, run_dir, options.out, options))
    finally:
        await drop_database(admin_dsn, template)
    return sweeps


async def _host_profile(options: ScaleOptions) -> str:
    assert options.host is not None
    return await asyncio.to_thread(
        load.check_host, options.host, seed=options.scenario.seed, scale=options.scales[0]
    )


async def _host_load_sweep(
    options: ScaleOptions, settings: Settings, console: Console, log: workflow.StepLog
) -> LoadSweep:
    run_dir = options.out / "load-sweep" / "host"
    outcome = await load.run(
        _sweep_load_options(
            replace(options, load_scale=options.scales[0]), run_dir, profile=None, dsn=None
        ),
        settings,
        console,
        log,
    )
    return load_sweep_of(
        outcome.profile or "unknown", options.scales[0], run_dir, options.out, options
    )
