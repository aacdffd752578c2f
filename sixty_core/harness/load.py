"""``sixty load``: one Locust run of a scenario against the service, with live probes.

Against the harness's own stack (Postgres, edge and service started here, the edge with
the scenario's fault profile) or a running service (``--host``). Locust runs headless as
child processes: one, or a master with ``workers`` local worker processes (Locust's own
master/worker mode, on loopback). Meanwhile :class:`~sixty_core.load.probes.ServiceProbe`
samples ``/metrics`` and the service's RSS. Afterwards the raw samples are merged and
checked against Locust's own count, and ``load.json`` is written beside Locust's CSV and
HTML, the samples, the time series and Locust's log.

Every wait is bounded: the health checks, each scrape, Locust itself (its run time plus a
grace period, then SIGINT, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sixty_core.db import workflow
from sixty_core.db.seed import seeded_owners
from sixty_core.errors import SixtyError
from sixty_core.harness.rundir import prepare_run_dir
from sixty_core.harness.servers import (
    SERVERS_MODULE,
    EdgeOptions,
    Supervisor,
    free_port,
    memray_launcher,
    stop_processes,
)
from sixty_core.load import contract, result, samples
from sixty_core.load.inserts import InsertWatcher
from sixty_core.load.probes import ServiceProbe, run_figures
from sixty_core.load.result import LoadMemray, LoadResult, PeakMemory
from sixty_core.load.scenario import Scenario, client_for_profile
from sixty_core.memory import process_peak_rss_bytes
from sixty_core.memray_sites import peak_allocators
from sixty_core.settings import Settings

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
#: After its run time, Locust gets this long to stop on its own before it is interrupted.
GRACE_S = 30.0
HOST_CHECK_TIMEOUT_S = 5.0
EXPECT_WORKERS_WAIT_S = 30


@dataclass(frozen=True)
class LoadOptions:
    """One ``sixty load`` run. ``host`` None means: start the stack with ``profile``."""

    scenario: Scenario
    shape: str
    out: Path
    profile: str | None = None
    host: str | None = None
    client: str | None = None
    workers: int = 0
    locustfile: Path = LOCUSTFILE
    progress: bool = True
    #: Run the service under ``memray run --aggregate`` for its peak heap and the top
    #: allocators at the peak (memray slows a live server about 1.7x: a separate run).
    memray: bool = False
    #: An already seeded database (at the scenario's scale and seed) to run on; None
    #: provisions and seeds one for the run.
    dsn: str | None = None
    #: Test faults (:mod:`sixty_core.faults`) the service runs with: known regressions
    #: for ``sixty selftest``; never part of a profile.
    inject: frozenset[str] = frozenset()
    #: The user counts of the ``steps`` shape (the load sweep); empty for other shapes.
    steps: tuple[int, ...] = ()
    #: Locust workers started on other machines: the master binds ``master_bind``
    #: (host:port) and waits for them besides the local ``workers``; ``worker.env`` in
    #: the run folder holds what each must be started with (see :func:`remote_worker_help`).
    remote_workers: int = 0
    master_bind: str = "127.0.0.1:5557"

    @property
    def expected_workers(self) -> int:
        return self.workers + self.remote_workers


def check_host(url: str, *, seed: int, scale: int) -> str:
    """Return the profile of the sixty service at ``url``; SixtyError with what to do when
    it is unreachable, does not speak this API, or does not know the seed's tokens."""
    if not url.startswith(("http://", "https://")):
        raise SixtyError(f"--host must be an http:// or https:// URL, got {url!r}")
    base = url.rstrip("/")
    try:
        health = httpx.get(f"{base}/api/health", timeout=HOST_CHECK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise SixtyError(
            f"cannot reach {base} ({type(exc).__name__}: {exc}); is the service running? "
            "(`sixty serve` starts one)"
        ) from None
    data = contract.payload(health.content)
    api = data.get("api") if isinstance(data, dict) else None
    profile = api.get("profile") if isinstance(api, dict) else None
    if health.status_code != 200 or not isinstance(profile, str):
        raise SixtyError(
            f"{base} does not speak the sixty deal API: GET /api/health answered "
            f"{health.status_code} without a profile"
        )
    owners = seeded_owners(scale, seed)
    try:
        probe = httpx.get(
            f"{base}/api/stages",
            headers={"Authorization": f"Bearer {owners[-1].token}"},
            timeout=HOST_CHECK_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise SixtyError(f"{base} stopped answering ({type(exc).__name__}: {exc})") from None
    if probe.status_code == 401:
        raise SixtyError(
            f"{base} refuses the tokens of seed {seed} at scale {scale}: pass the --seed and "
            "--seed-scale the service was seeded with"
        )
    return profile


def locust_env(options: LoadOptions, client: str, samples_dir: Path, run_id: str) -> dict[str, str]:
    """What every Locust process (master and workers alike) reads at start."""
    scenario = options.scenario
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SIXTY_LOAD_SCENARIO": scenario.to_json().decode(),
        "SIXTY_LOAD_CLIENT": client,
        "SIXTY_LOAD_SHAPE": options.shape,
        "SIXTY_LOAD_SAMPLES_DIR": str(samples_dir),
        "SIXTY_LOAD_SEED": str(scenario.seed),
        "SIXTY_LOAD_SEED_SCALE": str(scenario.seed_scale),
        "SIXTY_LOAD_RUN_ID": run_id,
        "SIXTY_LOAD_STEPS": ",".join(str(users) for users in options.steps),
    }


def locust_commands(options: LoadOptions, host: str, out: Path) -> list[list[str]]:
    """The master (or only) Locust command first, then one per worker."""
    scenario = options.scenario
    base = [sys.executable, "-m", "locust", "-f", str(options.locustfile)]
    main = [
        *base,
        "--headless",
        "--host",
        host,
        "-u",
        str(scenario.users),
        "-r",
        f"{scenario.spawn_rate:g}",
        "-t",
        f"{max(1, round(scenario.duration_s))}s",
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--only-summary",
        "--json-file",
        str(out / "locust"),
        "--exit-code-on-error",
        "0",
    ]
    if options.expected_workers == 0:
        return [main]
    if options.remote_workers:
        bind_host, port = split_bind(options.master_bind)
    else:
        bind_host, port = "127.0.0.1", free_port()
    master = [
        *main,
        "--master",
        "--master-bind-host",
        bind_host,
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(options.expected_workers),
        "--expect-workers-max-wait",
        str(EXPECT_WORKERS_WAIT_S),
    ]
    worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    return [master, *([worker] * options.workers)]


def split_bind(text: str) -> tuple[str, int]:
    """``"0.0.0.0:5557"`` -> ``("0.0.0.0", 5557)``; SixtyError saying what is wrong."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SixtyError(f"--master-bind must be HOST:PORT, e.g. 0.0.0.0:5557; got {text!r}")
    return host, int(port)


def worker_env(options: LoadOptions, client: str, run_id: str) -> dict[str, str]:
    """What a remote worker must be started with: the scenario (its user classes read it
    at import) and the run's tags; the samples folder is the worker's own choice."""
    env = locust_env(options, client, Path("samples"), run_id)
    return {
        k: v
        for k, v in env.items()
        if k.startswith("SIXTY_LOAD_") and k != "SIXTY_LOAD_SAMPLES_DIR"
    }


def remote_worker_help(options: LoadOptions, env_path: Path) -> str:
    """The command each remote worker machine runs (printed when the master waits)."""
    _, port = split_bind(options.master_bind)
    return (
        f"waiting up to {EXPECT_WORKERS_WAIT_S} s for {options.remote_workers} remote "
        f"worker(s); on each worker machine, in a checkout of this repository with "
        f"{env_path.name} copied beside it:\n"
        f"  set -a; . ./{env_path.name}; set +a\n"
        f"  SIXTY_LOAD_SAMPLES_DIR=<this run's samples folder, mounted> .venv/bin/locust "
        f"-f loadtests/locustfile.py --worker --master-host <this machine> --master-port "
        f"{port}\n"
        f"Figures come from the samples in {options.out / 'samples'}: a worker whose samples "
        "do not land there (a shared mount) is missing from them, and the run says so."
    )


def locust_total(out: Path) -> int | None:
    """Locust's own request count: its ``--json-file`` (written after the users stopped,
    so a request finishing during shutdown is in it, unlike the CSV's last row), else the
    ``Aggregated`` row of its stats CSV."""
    stats = out / "locust.json"
    if stats.exists():
        entries = json.loads(stats.read_text())
        return sum(int(entry["num_requests"]) for entry in entries)
    path = out / "locust_stats.csv"
    if not path.exists():
        return None
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated":
                return int(row["Request Count"])
    return None


def drive_locust(
    options: LoadOptions, host: str, client: str, run_id: str, probe: ServiceProbe
) -> int | None:
    """Run Locust to the end (bounded), with a progress bar; return Locust's total."""
    out = options.out
    samples_dir = out / "samples"
    env = locust_env(options, client, samples_dir, run_id)
    commands = locust_commands(options, host, out)
    log_paths = [
        out / ("locust.log" if i == 0 else f"locust-worker-{i}.log") for i in range(len(commands))
    ]
    processes: list[subprocess.Popen[bytes]] = []
    deadline_s = (
        options.scenario.duration_s
        + GRACE_S
        + (EXPECT_WORKERS_WAIT_S if options.expected_workers else 0)
    )
    if options.remote_workers:
        env_path = out / "worker.env"
        env_path.write_text(
            "".join(
                f"{k}={shlex.quote(v)}\n" for k, v in worker_env(options, client, run_id).items()
            )
        )
        print(remote_worker_help(options, env_path), flush=True)
    try:
        for command, log_path in zip(commands, log_paths, strict=True):
            with log_path.open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
        with _progress(options) as update:
            started = time.monotonic()
            while processes[0].poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > deadline_s:
                    raise SixtyError(
                        f"Locust did not finish within {deadline_s:.0f} s; its log: {log_paths[0]}"
                    )
                update(elapsed, probe)
                time.sleep(0.25)
            update(options.scenario.duration_s, probe)
    finally:
        stop_processes(processes, timeout_s=10)
    code = processes[0].returncode
    if code not in (0, None):
        tail = log_paths[0].read_text(errors="replace")[-1500:]
        raise SixtyError(f"Locust exited with code {code}:\n{tail}")
    return locust_total(out)


@contextlib.contextmanager
def _progress(options: LoadOptions) -> Iterator[Callable[[float, ServiceProbe], None]]:
    total = options.scenario.duration_s
    progress = Progress(
        TextColumn("[bold]load[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>4.0f}/{task.total:.0f} s"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not options.progress,
        transient=False,
    )
    task = progress.add_task(options.shape, total=total, status="")

    def update(elapsed: float, probe: ServiceProbe) -> None:
        status = ""
        if probe.samples:
            last = probe.samples[-1]
            served = int(last.series.get("http_requests_total", 0))
            rss = f"{last.rss_bytes / 2**20:.0f} MB RSS" if last.rss_bytes else ""
            status = f"{served} requests served {rss}"
        progress.update(task, completed=min(elapsed, total), status=status)

    with progress:
        yield update


async def run(
    options: LoadOptions, settings: Settings, console: Console, log: workflow.StepLog
) -> LoadResult:
    """Run one load test as ``options`` say; write everything under ``options.out``."""
    scenario = options.scenario
    run_id = time.strftime("%Y%m%dT%H%M%S")
    if options.host is not None:
        base = options.host.rstrip("/")
        profile = await asyncio.to_thread(
            check_host, base, seed=scenario.seed, scale=scenario.seed_scale
        )
        prepare_run_dir(options.out)
        client = options.client or client_for_profile(profile)
        console.print(f"target {base} (profile [bold]{profile}[/], {client} client)")
        probe = ServiceProbe(base).start()
        try:
            total = await asyncio.to_thread(drive_locust, options, base, client, run_id, probe)
        finally:
            probe.stop()
        figures = run_figures(probe.samples)
        peak = PeakMemory(figures.max_rss_sampled_mb, "sampled /metrics")
        duplicates = unnamed = inserted = deleted = None
        target = base
    else:
        assert options.profile is not None
        prepare_run_dir(options.out)
        settings = replace(
            settings,
            seed_scale=scenario.seed_scale,
            seed=scenario.seed,
            time_scale=scenario.time_scale,
        )
        async with workflow.seeded_dsn(settings, log=log, dsn=options.dsn) as (dsn, _):
            edge = scenario.edge
            capture = options.out / "service.memray.bin"
            supervisor = Supervisor(
                dsn,
                options.profile,
                time_scale=scenario.time_scale,
                service_launcher=(
                    memray_launcher(capture, aggregate=True) if options.memray else SERVERS_MODULE
                ),
                edge=EdgeOptions(
                    failure_rate=edge.failure_rate,
                    hang_probability=edge.hang_probability,
                    latency_ms=edge.latency_ms_median,
                    latency_sigma=edge.latency_sigma,
                    seed=edge.seed,
                ),
                log_dir=options.out / "servers",
                keep_logs=True,
                test_faults=options.inject,
            )
            (options.out / "servers").mkdir()
            with log.step("start servers"):
                await asyncio.to_thread(supervisor.start)
            try:
                pid = supervisor.pids()["service"]
                profile = options.profile
                client = options.client or client_for_profile(profile)
                console.print(
                    f"profile [bold]{profile}[/] ({client} client) at {supervisor.service_url}"
                )
                async with InsertWatcher(dsn) as inserts:
                    probe = ServiceProbe(supervisor.service_url, pid=pid).start()
                    try:
                        total = await asyncio.to_thread(
                            drive_locust, options, supervisor.service_url, client, run_id, probe
                        )
                    finally:
                        probe.stop()
                hwm = process_peak_rss_bytes(pid)
            finally:
                # A traced service writes its capture on the way out: give it time.
                await asyncio.to_thread(supervisor.stop, 60.0 if options.memray else 15.0)
            duplicates, unnamed = inserts.duplicates(f"load {run_id} "), inserts.unnamed
            inserted, deleted = inserts.inserted, inserts.deleted
        figures = run_figures(probe.samples)
        if options.memray:
            # Traced, the RSS also holds memray's own capture pages: no slope from it.
            figures.rss_slope_mb_per_10k_requests = None
        peak = PeakMemory(
            hwm / 2**20 if hwm else figures.max_rss_sampled_mb,
            ("VmHWM, traced by memray" if options.memray else "VmHWM") if hwm else "sampled",
        )
        profile = probe.profile or options.profile
        target = "local"
    probe.write(options.out / "timeseries.jsonl")
    sample_set = samples.read_dir(options.out / "samples")
    outcome = result.build(
        sample_set=sample_set,
        scenario=scenario,
        shape=options.shape,
        target=target,
        profile=profile,
        client=client,
        workers=options.expected_workers,
        service=figures,
        peak_rss=peak,
        locust_total=total,
        duplicates_in_db=duplicates,
        inserted_unnamed=unnamed,
        probe_samples=len(probe.samples),
        probe_failures=probe.failed_scrapes,
        deals_inserted=inserted,
        deals_deleted=deleted,
    )
    if options.memray and options.host is None:
        outcome.memray = await asyncio.to_thread(heap_at_peak, options.out / "service.memray.bin")
    result.write(outcome, options.out / "load.json")
    return outcome


def heap_at_peak(capture: Path) -> LoadMemray | None:
    """Peak heap and the top allocators at the peak of a memray capture (None if the
    traced service left none)."""
    from memray import FileReader

    if not capture.exists():
        return None
    reader = FileReader(str(capture))
    try:
        return LoadMemray(
            str(capture), reader.metadata.peak_memory / 2**20, peak_allocators(reader)
        )
    finally:
        reader.close()


def summary_table(outcome: LoadResult) -> Table:
    """Per endpoint: requests, failures, exact p50/p95/p99 (ms) and req/s."""
    table = Table(title=f"{outcome.profile} ({outcome.client} client), {outcome.window_s:.0f} s")
    for column in ("endpoint", "requests", "failures", "p50 ms", "p95 ms", "p99 ms", "req/s"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for row in [*outcome.endpoints, *outcome.actions]:
        table.add_row(
            row.name if row.kind != samples.ACTION else f"[italic]{row.name}[/]",
            str(row.requests),
            str(row.failures),
            *(f"{q.value:.1f}" if q else "-" for q in (row.p50_ms, row.p95_ms, row.p99_ms)),
            f"{row.rps:.1f}",
        )
    return table


def headline(outcome: LoadResult) -> list[str]:
    """The seed report's load figures for this run, one line each."""
    rate = outcome.failure_rate
    lines = [
        f"failure rate      {rate.value:.2%} [{rate.low:.2%}, {rate.high:.2%}] "
        f"({outcome.failures} of {outcome.requests} requests)",
        f"throughput        {outcome.rps:.1f} req/s",
    ]
    create = outcome.deal_create
    if create is not None and create.p50_ms is not None:
        p50, p95, p99 = create.p50_ms, create.p95_ms, create.p99_ms
        assert p95 is not None and p99 is not None
        lines.append(
            f"deal create       p50 {p50.value:.0f} ms, p95 {p95.value:.0f} ms, "
            f"p99 {p99.value:.0f} ms ({create.requests} wizard creates)"
        )
    service = outcome.service
    hit = service.cache_hit_rate
    lines.append(
        "cache hit rate    "
        + (f"{hit:.1%} ({service.cache_hits} hits)" if hit is not None else "no cache lookups")
    )
    if service.pool_efficiency is not None:
        lines.append(f"pool efficiency   {service.pool_efficiency:.1%} busy / open connection-s")
    if outcome.peak_rss.mb is not None:
        lines.append(f"peak RSS          {outcome.peak_rss.mb:.0f} MB ({outcome.peak_rss.source})")
    if outcome.memray is not None:
        top = outcome.memray.at_peak[0] if outcome.memray.at_peak else None
        lines.append(
            f"peak heap         {outcome.memray.peak_heap_mb:.1f} MB (memray)"
            + (f"; most at {top.site} ({top.bytes / 2**20:.1f} MB)" if top else "")
        )
    slope = outcome.service.rss_slope_mb_per_10k_requests
    if slope is not None:
        lines.append(f"RSS slope         {slope:+.2f} MB per 10k requests (second half)")
    if outcome.deals_inserted is not None and outcome.deals_deleted is not None:
        # Cached lists grow with the table, so a growing table lifts the RSS slope.
        lines.append(
            f"deal rows         {outcome.deals_inserted - outcome.deals_deleted:+,} over the "
            f"run ({outcome.deals_inserted:,} inserted, {outcome.deals_deleted:,} deleted)"
        )
    garbage = outcome.service.cyclic_garbage_per_1k_requests
    if garbage is not None:
        lines.append(f"cyclic garbage    {garbage:,.0f} objects per 1k requests (freed by the GC)")
    dupes = outcome.duplicates_created
    db = outcome.duplicates_in_db
    lines.append(
        f"duplicates        {dupes} seen by clients"
        + (f", {db} in the database" if db is not None else "")
    )
    lines.append(f"contract breaks   {outcome.contract_violations}")
    for reason, count in list(outcome.failure_reasons.items())[:5]:
        lines.append(f"  {count:>6} x {reason}")
    accounting = outcome.samples
    if accounting.matches_locust is False:
        lines.append(
            f"[yellow]samples {accounting.count} != Locust's total {accounting.locust_total}[/]"
        )
    return lines
