"""The ``sixty`` command: a thin shell over sixty_core (``main(argv) -> int``).

Exit codes: 0 success, 1 a domain error (printed as ``sixty: error: ...``), 2 bad usage,
130 interrupted. No business logic lives here: each command parses its flags, builds
:class:`Settings` and calls one workflow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from sixty_core import cli_pipeline, cli_reliability
from sixty_core.db import workflow
from sixty_core.db.migrate import migrate
from sixty_core.db.provision import Database, connect, provision
from sixty_core.db.seed import SeedReport, seed
from sixty_core.errors import SixtyError
from sixty_core.faults import TEST_FAULTS
from sixty_core.harness import rundir
from sixty_core.load.scenario import Scenario
from sixty_core.settings import DB_BACKENDS, DEFAULT_SEED, DEFAULT_SEED_SCALE, Settings
from sixty_core.types import Environ

DEFAULT_TOKENS_FILE = Path(".sixty") / "tokens.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sixty",
        description=(
            "Benchmark and regression harness for a Postgres-backed deal service, "
            "in a legacy and an optimized profile."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db = commands.add_parser(
        "db",
        help="provision, migrate and seed Postgres",
        description="Provision a real Postgres (embedded by default), migrate and seed it.",
    )
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")

    def add_db_flags(p: argparse.ArgumentParser, *, dsn: bool = False) -> None:
        p.add_argument(
            "--db",
            choices=DB_BACKENDS,
            default=None,
            help="Postgres backend: embedded (default, no setup), container (Docker), or url "
            "(SIXTY_DATABASE_URL); env SIXTY_DB",
        )
        if dsn:
            p.add_argument(
                "--dsn",
                default=None,
                help="operate on this existing database (implies --db url); env SIXTY_DATABASE_URL",
            )

    def add_seed_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--scale",
            type=int,
            default=DEFAULT_SEED_SCALE,
            help=f"seed size: 5 owners and 500 deals per unit (default {DEFAULT_SEED_SCALE})",
        )
        p.add_argument(
            "--seed",
            type=int,
            default=DEFAULT_SEED,
            help=f"random seed; same scale and seed give identical data (default {DEFAULT_SEED})",
        )

    check = db_commands.add_parser(
        "check",
        help="provision, migrate, seed, run a sanity query, tear down; print timings",
    )
    add_db_flags(check)
    add_seed_flags(check)

    up = db_commands.add_parser(
        "up",
        help="provision, migrate and seed, then keep the server running until Ctrl-C",
    )
    add_db_flags(up)
    add_seed_flags(up)
    up.add_argument(
        "--tokens-file",
        type=Path,
        default=DEFAULT_TOKENS_FILE,
        help=f"where to write the seeded owners' bearer tokens (default {DEFAULT_TOKENS_FILE})",
    )

    mig = db_commands.add_parser("migrate", help="apply pending schema migrations")
    add_db_flags(mig, dsn=True)

    sd = db_commands.add_parser(
        "seed",
        help="load deterministic seed data (into --dsn, or a throwaway database)",
    )
    add_db_flags(sd, dsn=True)
    add_seed_flags(sd)
    sd.add_argument(
        "--reset", action="store_true", help="replace existing seeded data instead of refusing"
    )
    serve = commands.add_parser(
        "serve",
        help="run the deal API and its edge upstream on loopback until Ctrl-C",
        description="Provision and seed Postgres (unless --dsn), start the edge upstream and "
        "the deal service (uvicorn) on 127.0.0.1, print their URLs and where the "
        "bearer tokens are; Ctrl-C stops everything.",
    )
    serve.add_argument(
        "--profile",
        default="optimized",
        help="legacy, optimized, optimized-no-FLAG or legacy+FLAG (default optimized)",
    )
    add_db_flags(serve, dsn=True)
    serve.add_argument(
        "--seed-scale",
        dest="scale",
        type=int,
        default=DEFAULT_SEED_SCALE,
        help=f"seed size when provisioning (default {DEFAULT_SEED_SCALE})",
    )
    serve.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    serve.add_argument("--port", type=tcp_port, default=None, help="service port (default: free)")
    serve.add_argument("--edge-port", type=tcp_port, default=None, help="edge port (default: free)")
    serve.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="multiplies the delays that only reproduce the original (the legacy "
        "create's retry waits and per-attempt timeout, edge latency); default 1.0",
    )
    serve.add_argument(
        "--edge-failure-rate",
        type=float,
        default=None,
        help="share of edge create calls answered 503 (0..1; default 0); "
        "env SIXTY_EDGE_FAILURE_RATE",
    )
    serve.add_argument(
        "--edge-hang-probability",
        type=float,
        default=None,
        help="share of edge create calls that never answer (0..1; default 0); "
        "env SIXTY_EDGE_HANG_PROBABILITY",
    )
    serve.add_argument(
        "--edge-latency-ms",
        type=float,
        default=None,
        help="median edge latency in ms (lognormal, sigma 0.5; default 0); "
        "env SIXTY_EDGE_LATENCY_MS",
    )
    serve.add_argument(
        "--tokens-file",
        type=Path,
        default=DEFAULT_TOKENS_FILE,
        help=f"where to write the bearer tokens (default {DEFAULT_TOKENS_FILE})",
    )
    serve.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the service's and edge's log files (default: removed on exit)",
    )
    serve.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="FAULT",
        choices=sorted(TEST_FAULTS),
        help="switch on a named test fault (repeatable): "
        + "; ".join(f"{name}: {text}" for name, text in TEST_FAULTS.items())
        + "; env SIXTY_TEST_FAULTS",
    )
    probe = commands.add_parser(
        "probe",
        help="statements and auth lookups per request, per endpoint (a running service, "
        "or legacy vs optimized side by side)",
        description="Send each endpoint's request a few times, one at a time, as a seeded "
        "non-admin owner and print the statements and auth lookups each answer reports "
        "(X-Sixty-Queries, X-Sixty-Auth-Lookups), counted where the driver sends them. "
        "With --url, probe that service; without it, start each of --profiles in turn on "
        "an embedded Postgres and print them side by side (--markdown gives the README's "
        "table). Creates its own deals and deletes all but one.",
    )
    probe.add_argument("--url", default=None, help="a running service, e.g. http://127.0.0.1:8000")
    probe.add_argument(
        "--profiles",
        default="legacy,optimized",
        help="without --url: the profiles to compare, comma-separated (default legacy,optimized)",
    )
    add_db_flags(probe)
    probe.add_argument(
        "--tokens-file",
        type=Path,
        default=DEFAULT_TOKENS_FILE,
        help=f"with --url: tokens written by sixty serve (default {DEFAULT_TOKENS_FILE})",
    )
    probe.add_argument("--repeats", type=int, default=5, help="requests per endpoint")
    output = probe.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument(
        "--markdown", action="store_true", help="print a Markdown table (the README's)"
    )
    _add_bench_parser(commands)
    _add_load_parser(commands)
    _add_leaks_parser(commands)
    cli_pipeline.add_parsers(commands, add_db_flags)
    cli_reliability.add_parser(commands, add_db_flags)
    ceiling = commands.add_parser(
        "ceiling",
        help="hot endpoints' throughput from outside (wrk) beside the bare limits",
        description="Seed a database (embedded by default), start the service in legacy, "
        "optimized and optimized-no-query_cache plus two bare limits (a Starlette hello "
        "and a Starlette + asyncpg primary-key lookup) under the service's own server "
        "configuration, and load each hot endpoint with wrk over loopback, sides in "
        "alternating order round after round. Prints requests per second and each ratio "
        "with its 95% bootstrap interval against the hot-path targets, and beside them the "
        "server process's CPU time per request and the same ratios from it (they agree "
        "when the server is the bottleneck). A target is met or not met when its whole "
        "interval is on one side, inconclusive when the interval straddles it (more rounds "
        "narrow it). Needs wrk (the Debian package). Exit 0 when it ran (whatever the "
        "verdicts), 1 on an error.",
    )
    add_db_flags(ceiling)
    ceiling.add_argument("--scale", type=int, default=4, help="seed scale (default 4)")
    ceiling.add_argument(
        "--duration", type=float, default=5.0, help="whole seconds per wrk run (default 5)"
    )
    ceiling.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="measured rounds (default 5; below 3 there is no interval, the median decides)",
    )
    ceiling.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ceiling.add_argument("-k", dest="keyword", default=None, help="only endpoints containing K")
    ceiling.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write ceiling.json (every round) and ceiling.md (the table) "
        "(default: a new folder under reports/runs/)",
    )
    ceiling.add_argument(
        "--show",
        type=Path,
        default=None,
        metavar="CEILING_JSON",
        help="print the table of an existing ceiling.json and exit (runs nothing)",
    )
    ceiling.add_argument(
        "--flamegraphs",
        type=Path,
        default=None,
        metavar="DIR",
        help="also record a py-spy flame graph (SVG) of each side's server under wrk into DIR: "
        "one extra, unmeasured run per side before the measured rounds (needs py-spy and ptrace "
        "permission: root, or kernel.yama.ptrace_scope=0)",
    )
    return parser


def _add_load_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sixty_core.load.shapes import SHAPES

    load = commands.add_parser(
        "load",
        help="run a Locust load scenario against the service, with live probes",
        description="Run the standard load scenario (loadtests/locustfile.py: sales reps, "
        "managers, feed viewers, each with the client behaviour of the profile under test) "
        "headless against the service: by default Postgres, the edge upstream (with the "
        "scenario's faults) and the service are started here with --profile; --host uses a "
        "running service instead. While it runs, /metrics and the service's RSS are "
        "sampled at 2 Hz. Writes DIR/load.json (per endpoint: requests, failures by reason, "
        "exact p50/p95/p99 with 95% bootstrap intervals, req/s; the failure rate, deal "
        "creation latency, duplicates, contract violations, cache hit rate, pool efficiency "
        "and peak RSS), Locust's CSV and HTML, the raw samples and the time series, then "
        "prints a summary. For several machines, see the README (Locust --master/--worker).",
    )
    target = load.add_mutually_exclusive_group()
    target.add_argument(
        "--profile",
        default=None,
        help="profile to start and load: legacy, optimized, optimized-no-FLAG, legacy+FLAG "
        "(default optimized)",
    )
    target.add_argument(
        "--host", default=None, help="a running sixty service to load, e.g. http://127.0.0.1:8000"
    )
    load.add_argument(
        "--shape", choices=SHAPES, default="steady", help="load shape (default steady)"
    )
    load.add_argument(
        "--scenario",
        default="standard",
        metavar="NAME|FILE.json",
        help="a named scenario (standard: 32 users, 60 s, seed scale 4, edge faults; the "
        "default. steady-data: the same, with sales reps deleting as many deals as they "
        "create, for memory soaks) or a JSON file of one (fields as in "
        "sixty_core/load/scenario.py)",
    )
    load.add_argument("--users", type=int, default=None, help="peak users (default: scenario's)")
    load.add_argument(
        "--spawn-rate",
        type=float,
        default=None,
        help="users started per second (default: scenario's)",
    )
    load.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of load (default: scenario's, soak 600)",
    )
    load.add_argument(
        "--workers",
        type=int,
        default=0,
        help="local Locust worker processes under a master (default 0: one process)",
    )
    add_remote_worker_flags(load)
    load.add_argument(
        "--steps",
        type=str,
        default=None,
        metavar="USERS,...",
        help="with --shape steps: the user counts, each held for an equal share of the run "
        "(default 10,25,50,100,200,400)",
    )
    load.add_argument(
        "--client",
        choices=("legacy", "optimized"),
        default=None,
        help="client behaviour (default: the one that goes with the profile)",
    )
    load.add_argument("--seed", type=int, default=None, help="with --host: the service's seed")
    load.add_argument(
        "--seed-scale",
        dest="scale",
        type=int,
        default=None,
        help="with --host: the service's seed scale",
    )
    load.add_argument(
        "--memray",
        action="store_true",
        help="run the service under memray for its peak heap and top allocators at the peak "
        "(slows it about 1.7x: keep it apart from throughput runs)",
    )
    load.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: a new one under reports/runs/)",
    )


def _add_leaks_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    leaks = commands.add_parser(
        "leaks",
        help="find the service's leaks under memray, per component, with evidence",
        description="Start the service under memray (PYTHONMALLOC=malloc) and drive a "
        "lifecycle workload in cycles: sign-ins, the pipeline, the change feed, create, "
        "update, move and delete, logout. After each cycle read its counters (memory "
        "manager per component, feed listeners, asyncio tasks, allocated blocks, cache "
        "entries, RSS, open fds, pg_stat_activity). A counter that grows in every cycle "
        "after the warm-up, a fd/task/connection left over once drained, or a closed scope "
        "still holding resources is a leak; memray's leaked allocations give each its "
        "stack. Writes DIR/leaks.json (leaking_components first), the memray capture and "
        "its leaks flamegraph.",
    )
    leaks.add_argument(
        "--profile", default="optimized", help="profile to check (default optimized)"
    )
    leaks.add_argument(
        "--cycles", type=int, default=45, help="workload cycles, warm-up included (default 45)"
    )
    leaks.add_argument(
        "--warmup",
        type=int,
        default=30,
        help="cycles before tracking starts, to fill what is bounded (default 30)",
    )
    leaks.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="FAULT",
        choices=sorted(TEST_FAULTS),
        help="switch on a named test fault (repeatable): " + ", ".join(sorted(TEST_FAULTS)),
    )
    leaks.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: a new one under reports/runs/)",
    )


def _add_bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="run the benchmark suites (pytest-benchmark, legacy beside optimized)",
        description="Run the pytest-benchmark suites in bench/ against an embedded Postgres: "
        "caches, auth, pool, service reads and writes, deal creation under edge faults, and "
        "the hot API endpoints in process beside a bare Starlette hello and a bare "
        "Starlette + asyncpg lookup. Profiles are timed in alternating rounds in one "
        "process; each ratio comes with a 95% bootstrap interval, each benchmark with its "
        "counters per call (statements, auth lookups, cache and pool deltas, bytes, "
        "allocations, CPU time). Writes DIR/bench.json (pytest-benchmark's JSON), "
        "DIR/bench.md and DIR/bench.log, then prints the table. Exit 0 when every suite "
        "passed, 1 otherwise.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="short timing (CI): about a minute instead of several"
    )
    bench.add_argument(
        "--profiles",
        default="legacy,optimized",
        help="profiles to compare, comma-separated; the first is every ratio's baseline "
        "(default legacy,optimized)",
    )
    bench.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: a new folder under reports/runs/)",
    )
    bench.add_argument("-k", dest="keyword", default=None, help="only benchmarks matching EXPR")
    bench.add_argument(
        "--suites", type=Path, default=None, help="the suites folder (default: the clone's bench/)"
    )
    bench.add_argument(
        "--show",
        type=Path,
        default=None,
        metavar="BENCH_JSON",
        help="print the table of an existing bench.json and exit (runs nothing)",
    )


def add_remote_worker_flags(parser: argparse.ArgumentParser) -> None:
    """``--remote-workers`` and ``--master-bind``: load from Locust workers on other
    machines (``sixty load`` and ``sixty scale``)."""
    parser.add_argument(
        "--remote-workers",
        type=int,
        default=0,
        help="also wait for this many Locust workers started on other machines (the run "
        "prints their command and writes worker.env; default 0)",
    )
    parser.add_argument(
        "--master-bind",
        default="0.0.0.0:5557",
        metavar="HOST:PORT",
        help="with --remote-workers: where the Locust master listens (default 0.0.0.0:5557)",
    )


def check_remote_workers(args: argparse.Namespace) -> None:
    from sixty_core.harness.load import split_bind

    if not 0 <= args.remote_workers <= 256:
        raise SixtyError(f"--remote-workers must be between 0 and 256, got {args.remote_workers}")
    if args.remote_workers:
        split_bind(args.master_bind)


def tcp_port(text: str) -> int:
    """An argparse type: a TCP port a server can listen on, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"a TCP port is a whole number from 1 to 65535, got {text!r}"
        )
    return port


def main(argv: Sequence[str] | None = None, *, environ: Environ | None = None) -> int:
    """Run the ``sixty`` command line; return the process exit code."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False)
    try:
        settings = _settings(args, env)
        if getattr(args, "tokens_file", None) is not None:
            args.tokens_file = args.tokens_file.resolve()
            if _writes_tokens(args):
                # Written after seeding: a path that cannot take it is refused first.
                rundir.check_output_file(args.tokens_file, "--tokens-file")
        return asyncio.run(_dispatch(args, settings, out))
    except SixtyError as exc:
        err.print(f"[bold red]sixty: error:[/] {exc}", markup=True, soft_wrap=True)
        return 1
    except OSError as exc:
        # A path the machine refused (permissions, a full disk, a file where a folder should
        # be) that no command checked first: the path and the reason, not a traceback.
        if exc.filename is None:
            raise
        err.print(
            f"[bold red]sixty: error:[/] {exc.filename}: {exc.strerror or exc}",
            markup=True,
            soft_wrap=True,
        )
        return 1
    except KeyboardInterrupt:
        err.print("sixty: interrupted")
        return 130


def _writes_tokens(args: argparse.Namespace) -> bool:
    """Whether the command writes ``--tokens-file`` (probe only reads it)."""
    return args.command == "serve" or getattr(args, "db_command", None) == "up"


def _settings(args: argparse.Namespace, env: Environ) -> Settings:
    dsn = getattr(args, "dsn", None)
    return Settings.from_env(
        env,
        db_backend="url" if dsn else getattr(args, "db", None),
        database_url=dsn,
        seed_scale=getattr(args, "scale", None),
        seed=getattr(args, "seed", None),
        time_scale=getattr(args, "time_scale", None),
        edge_failure_rate=getattr(args, "edge_failure_rate", None),
        edge_hang_probability=getattr(args, "edge_hang_probability", None),
        edge_latency_ms=getattr(args, "edge_latency_ms", None),
        test_faults=frozenset(getattr(args, "inject", None) or ()) or None,
    )


async def _dispatch(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    if cli_pipeline.is_pipeline_command(args.command):
        return await cli_pipeline.dispatch(args, settings, out)
    if args.command == "bench":
        return await asyncio.to_thread(_bench, args, out)
    if args.command == "reliability":
        return await cli_reliability.run(args, settings, out)
    if args.command == "ceiling":
        return await _ceiling(args, settings, out)
    if args.command == "load":
        return await _load(args, settings, out)
    if args.command == "leaks":
        return await _leaks(args, settings, out)
    if args.command == "serve":
        return await _serve(args, settings, out)
    if args.command == "probe":
        if args.url is None:
            return await _probe_profiles(args, settings, out)
        return await asyncio.to_thread(_probe, args, out)
    if args.db_command == "check":
        return await _db_check(settings, out)
    if args.db_command == "up":
        return await _db_up(settings, out, args.tokens_file)
    if args.db_command == "migrate":
        return await _db_migrate(settings, out)
    return await _db_seed(settings, out, reset=args.reset)


def _step_printer(out: Console) -> workflow.StepLog:
    return workflow.StepLog(
        on_step=lambda name, s: out.print(f"  [green]✓[/] {name:<14} {s * 1000:8.0f} ms")
    )


async def _db_check(settings: Settings, out: Console) -> int:
    out.print(
        f"[bold]sixty db check[/] — backend {settings.db_backend}, "
        f"scale {settings.seed_scale}, seed {settings.seed}"
    )
    log = _step_printer(out)
    result = await workflow.check(settings, log=log)
    table = Table(title="seeded rows", show_edge=False)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in result.seed.rows.items():
        table.add_row(name, f"{count:,}")
    out.print(table)
    s = result.sanity
    out.print(
        f"seed: {result.seed.total_rows:,} rows in {result.seed.seconds:.3f} s "
        f"= [bold]{result.seed.rows_per_s:,.0f} rows/s[/]"
    )
    out.print(
        f"sanity: {s['owners']} owners, {s['deals']} deals, {s['sessions']} sessions, "
        f"weighted pipeline {s['weighted_pipeline_value']:,.2f}, "
        f"revenue-trigger mismatches {s['revenue_mismatches']}"
    )
    total = sum(seconds for _, seconds in log.steps)
    if s["revenue_mismatches"]:
        out.print("[red]FAIL[/]: the revenue trigger did not hold on every deal")
        return 1
    out.print(f"[bold green]OK[/] in {total:.2f} s")
    return 0


async def _db_up(settings: Settings, out: Console, tokens_file: Path) -> int:
    log = _step_printer(out)
    with _stop_on_signals() as stop:
        async with workflow.seeded_database(settings, log=log, tokens_file=tokens_file) as (
            database,
            report,
        ):
            _print_db_up(out, database, tokens_file, report)
            await stop.wait()
            out.print("stopping…")
    return 0


def _print_db_up(out: Console, database: Database, tokens_file: Path, report: SeedReport) -> None:
    # A DSN we made carries the password the user needs; one they gave us, they know.
    dsn = database.redacted_dsn if database.backend == "url" else database.dsn
    out.print(f"[bold]Postgres ({database.backend}) is up[/]")
    out.print(f"  DSN:         {dsn}")
    out.print(f"  tokens file: {tokens_file} ({len(report.owners)} owners)")
    out.print(f"  seeded:      {report.total_rows:,} rows ({report.rows_per_s:,.0f} rows/s)")
    out.print("Press Ctrl-C to stop and remove it.")


@contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs.

    Installed before anything starts, so a Ctrl-C during start-up is not a
    KeyboardInterrupt in the middle of it. It is a request to stop, honoured once
    start-up is done, and everything started is then stopped in order.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _db_migrate(settings: Settings, out: Console) -> int:
    async with provision(settings) as database:
        conn = await connect(database.dsn)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
    if applied:
        out.print(f"applied migrations: {', '.join(applied)} on {database.redacted_dsn}")
    else:
        out.print(f"schema is up to date on {database.redacted_dsn}")
    return 0


async def _db_seed(settings: Settings, out: Console, *, reset: bool) -> int:
    if settings.db_backend != "url":
        out.print(
            f"no --dsn given: seeding a throwaway {settings.db_backend} database "
            "(use `sixty db up` to keep one)"
        )
    async with provision(settings) as database:
        conn = await connect(database.dsn)
        try:
            if settings.db_backend != "url":
                await migrate(conn)
            report = await seed(conn, scale=settings.seed_scale, seed=settings.seed, reset=reset)
        finally:
            await conn.close()
    out.print(
        f"seeded {report.total_rows:,} rows in {report.seconds:.3f} s "
        f"({report.rows_per_s:,.0f} rows/s) into {database.redacted_dsn}"
    )
    return 0


async def _serve(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from sixty_core.harness.servers import EdgeOptions, Supervisor
    from sixty_core.profiles import FLAGS, resolve_profile

    profile = resolve_profile(args.profile)
    edge = EdgeOptions(
        failure_rate=settings.edge_failure_rate,
        hang_probability=settings.edge_hang_probability,
        latency_ms=settings.edge_latency_ms,
        latency_sigma=0.5 if settings.edge_latency_ms else 0.0,
    )
    log = _step_printer(out)
    async with AsyncExitStack() as stack:
        stop = stack.enter_context(_stop_on_signals())
        if settings.db_backend == "url":
            database = await stack.enter_async_context(provision(settings))
            conn = await connect(database.dsn)
            try:
                await migrate(conn)
            finally:
                await conn.close()
            out.print("using the given database as it is (migrated, not seeded)")
            owners = await workflow.seeded_owners_of(
                database.dsn, scale=settings.seed_scale, seed_value=settings.seed
            )
            tokens_file: Path | None = None
            if owners is not None:
                tokens_file = args.tokens_file
                workflow.write_owner_tokens(
                    args.tokens_file, seed=settings.seed, scale=settings.seed_scale, owners=owners
                )
        else:
            database, _report = await stack.enter_async_context(
                workflow.seeded_database(settings, log=log, tokens_file=args.tokens_file)
            )
            tokens_file = args.tokens_file
        supervisor = Supervisor(
            database.dsn,
            profile.name,
            time_scale=settings.time_scale,
            port=args.port,
            edge_port=args.edge_port,
            edge=edge,
            keep_logs=args.keep_logs,
            test_faults=settings.test_faults,
        )
        with log.step("start servers"):
            await asyncio.to_thread(supervisor.start)
        stack.callback(supervisor.stop)
        out.print(
            f"[bold]sixty serve[/] — profile [bold]{profile.name}[/] "
            f"({', '.join(f for f in FLAGS if f in profile.flags) or 'no optimizations'})"
        )
        out.print(
            f"  service: {supervisor.service_url}   (OpenAPI: "
            f"{supervisor.service_url}/openapi.json, metrics: /metrics)"
        )
        out.print(f"  edge:    {supervisor.edge_url}")
        if tokens_file is not None:
            out.print(f"  tokens:  {tokens_file}")
        else:
            out.print(
                f"  tokens:  none written: the database has no live sessions of seed "
                f"{settings.seed} at scale {settings.seed_scale} (pass the --seed and "
                "--seed-scale it was seeded with, or seed it: `sixty db seed --dsn ...`)"
            )
        if settings.test_faults:
            out.print(f"  faults:  {', '.join(sorted(settings.test_faults))} (test faults on)")
        kept = "kept" if args.keep_logs else "removed on exit; --keep-logs keeps them"
        out.print(f"  logs:    {supervisor.log_dir} ({kept})")
        owner_token = _first_non_admin(tokens_file) if tokens_file is not None else None
        if owner_token is not None:
            out.print(f"  try:     export TOKEN={owner_token}")
            out.print(
                f'           curl -H "Authorization: Bearer $TOKEN" '
                f"'{supervisor.service_url}/api/deals?limit=2'"
            )
        out.print("Press Ctrl-C to stop.")
        await stop.wait()
        out.print("stopping…")
    return 0


def _probe(args: argparse.Namespace, out: Console) -> int:
    from sixty_core.harness.probe import as_rows, probe

    if not 1 <= args.repeats <= 1000:
        raise SixtyError(f"--repeats must be between 1 and 1000, got {args.repeats}")
    try:
        owners = json.loads(args.tokens_file.read_text())["owners"]
        owner = next(o for o in owners if not o["is_admin"])
    except (OSError, ValueError, KeyError, StopIteration):
        raise SixtyError(
            f"cannot read a non-admin owner from {args.tokens_file}: start the "
            "service with `sixty serve` (it writes that file) or pass "
            "--tokens-file"
        ) from None
    rows = as_rows(probe(args.url, owner["token"], owner["id"], repeats=args.repeats))
    if args.json:
        out.print_json(json.dumps(rows))
        return 0
    table = Table(title=f"statements per request — {args.url}", show_edge=False)
    for column in ("endpoint", "status", "first", "steady", "auth (steady)"):
        table.add_column(column, justify="left" if column == "endpoint" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["endpoint"],
            ",".join(map(str, r["statuses"])),
            str(r["first_queries"]),
            f"{r['steady_queries']:.1f}",
            f"{r['steady_auth_lookups']:.1f}",
        )
    out.print(table)
    out.print(PROBE_LEGEND)
    return 0


PROBE_LEGEND = (
    "statements sent to Postgres per request, counted on the connection (BEGIN/COMMIT, the "
    "pool's reset and auth lookups included; a create adds the edge process's insert); "
    "first = cold caches, steady = mean of the rest; one request at a time."
)


async def _probe_profiles(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from sixty_core.harness.probe import as_rows, comparison, markdown_table, probe_profiles
    from sixty_core.profiles import parse_profile_list

    if not 1 <= args.repeats <= 1000:
        raise SixtyError(f"--repeats must be between 1 and 1000, got {args.repeats}")
    profiles = list(parse_profile_list(args.profiles))
    quiet = args.json or args.markdown
    log = workflow.StepLog(
        on_step=None if quiet else lambda name, s: out.print(f"  [green]✓[/] {name:<22} {s:6.1f} s")
    )
    with _stop_on_signals():
        results = await probe_profiles(settings, profiles, repeats=args.repeats, log=log)
    if args.json:
        out.print_json(json.dumps({p: as_rows(r) for p, r in results.items()}))
    elif args.markdown:
        out.print(markdown_table(results), end="", markup=False)
    else:
        header, rows = comparison(results)
        table = Table(title="statements per request, side by side", show_edge=False)
        for i, column in enumerate(header):
            table.add_column(column, justify="right" if i else "left", no_wrap=not i)
        for row in rows:
            table.add_row(*row)
        out.print(table)
        out.print(PROBE_LEGEND)
    return 0


def _first_non_admin(tokens_file: Path) -> str | None:
    """The token of the first non-admin seeded owner, if a tokens file was written."""
    try:
        owners = json.loads(tokens_file.read_text())["owners"]
    except (OSError, ValueError, KeyError):
        return None
    return next((o["token"] for o in owners if not o["is_admin"]), None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _scenario(text: str) -> Scenario:
    """A named scenario, or one read from a JSON file; SixtyError saying which are known."""
    from sixty_core.load.scenario import SCENARIOS, Scenario

    if text in SCENARIOS:
        return SCENARIOS[text]
    if not text.endswith(".json"):
        raise SixtyError(
            f"unknown scenario {text!r}: use one of {', '.join(sorted(SCENARIOS))} "
            "or a path to a scenario .json file"
        )
    try:
        return Scenario.from_json(Path(text).read_bytes())
    except OSError as exc:
        raise SixtyError(f"cannot read scenario file {text}: {exc.strerror}") from None
    except ValueError as exc:
        raise SixtyError(f"{text}: {exc}") from None


async def _load(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from sixty_core.harness import load
    from sixty_core.harness.rundir import new_run_dir
    from sixty_core.load.shapes import DEFAULT_DURATION_S, DEFAULT_STEPS, parse_steps
    from sixty_core.profiles import resolve_profile

    scenario = _scenario(args.scenario)
    duration = args.duration
    if duration is None and args.shape == "soak":
        duration = DEFAULT_DURATION_S["soak"]
    if args.users is not None and not 1 <= args.users <= 10_000:
        raise SixtyError(f"--users must be between 1 and 10000, got {args.users}")
    if args.spawn_rate is not None and not 0 < args.spawn_rate <= 10_000:
        raise SixtyError(f"--spawn-rate must be above 0 (and at most 10000), got {args.spawn_rate}")
    if duration is not None and not 1 <= duration <= 86_400:
        raise SixtyError(f"--duration must be between 1 and 86400 seconds, got {duration:g}")
    if not 0 <= args.workers <= 64:
        raise SixtyError(f"--workers must be between 0 and 64, got {args.workers}")
    check_remote_workers(args)
    steps: tuple[int, ...] = ()
    if args.steps is not None:
        if args.shape != "steps":
            raise SixtyError("--steps goes with --shape steps")
        try:
            steps = parse_steps(args.steps)
        except ValueError as exc:
            raise SixtyError(f"--steps: {exc}") from None
    elif args.shape == "steps":
        steps = DEFAULT_STEPS
    if steps:
        scenario = scenario.with_overrides(users=max(steps))
    if args.host is not None and args.memray:
        raise SixtyError("--memray traces a service this command starts: not with --host")
    if args.host is None and (args.seed is not None or args.scale is not None):
        raise SixtyError("--seed and --seed-scale describe a running service: use them with --host")
    scenario = scenario.with_overrides(
        users=args.users, spawn_rate=args.spawn_rate, duration_s=duration
    )
    if args.seed is not None or args.scale is not None:
        scenario = msgspec.structs.replace(
            scenario,
            seed=scenario.seed if args.seed is None else args.seed,
            seed_scale=scenario.seed_scale if args.scale is None else args.scale,
        )
    profile = None if args.host else resolve_profile(args.profile or "optimized").name
    options = load.LoadOptions(
        scenario=scenario,
        shape=args.shape,
        out=(args.out or new_run_dir(f"load-{profile or 'host'}")).resolve(),
        profile=profile,
        host=args.host,
        client=args.client,
        workers=args.workers,
        progress=out.is_terminal,
        memray=args.memray,
        steps=steps,
        remote_workers=args.remote_workers,
        master_bind=args.master_bind,
    )
    _widen_for_logs(out)
    outcome = await load.run(options, settings, out, _step_printer(out))
    out.print(load.summary_table(outcome))
    for line in load.headline(outcome):
        out.print(line)
    out.print(f"results: {options.out / 'load.json'}")
    return 0


async def _leaks(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from sixty_core.harness import leaks
    from sixty_core.harness.rundir import new_run_dir
    from sixty_core.profiles import resolve_profile

    if not 0 <= args.warmup < args.cycles - 2:
        raise SixtyError(
            f"--warmup must leave at least 3 tracked cycles: got --warmup {args.warmup} "
            f"with --cycles {args.cycles}"
        )
    if args.cycles > 1000:
        raise SixtyError(f"--cycles must be at most 1000, got {args.cycles}")
    profile = resolve_profile(args.profile).name
    options = leaks.LeakOptions(
        profile=profile,
        out=(args.out or new_run_dir(f"leaks-{profile}")).resolve(),
        cycles=args.cycles,
        warmup=args.warmup,
        inject=frozenset(args.inject),
        progress=out.is_terminal,
    )
    _widen_for_logs(out)
    result = await leaks.run(options, settings, out, _step_printer(out))
    for line in leaks.summary(result):
        out.print(line)
    out.print(f"results: {options.out / 'leaks.json'}")
    return 0


def _bench(args: argparse.Namespace, out: Console) -> int:
    from sixty_core.benchkit import summary
    from sixty_core.harness.bench import BenchOptions, run_bench
    from sixty_core.profiles import parse_profile_list

    _widen_for_logs(out)
    if args.show is not None:
        out.print(summary.rich_table(summary.load(args.show), title=str(args.show)))
        return 0
    options = BenchOptions(
        quick=args.quick,
        profiles=parse_profile_list(args.profiles),
        out=args.out,
        keyword=args.keyword,
        suites=args.suites,
    )
    started = time.monotonic()
    path = run_bench(options, out)
    results = summary.load(path)
    out.print(summary.rich_table(results))
    out.print(
        f"[green]✓[/] {len(results['benchmarks'])} benchmarks in "
        f"{time.monotonic() - started:.0f} s; results: {path} (table: {path.with_suffix('.md')})"
    )
    return 0


async def _ceiling(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    import psutil

    from sixty_core.harness import ceiling, flamegraphs
    from sixty_core.harness.rundir import make_folder, new_run_dir

    if args.show is not None:
        results, saved = ceiling.load(args.show)
        _widen_for_logs(out)
        ceiling.show(out, results, int(saved["rounds"]), saved.get("cpu_during_run"))
        return 0
    if not (1 <= args.duration <= 600 and args.duration.is_integer()):
        raise SixtyError(
            "--duration must be between 1 and 600 whole seconds (wrk counts whole seconds), "
            f"got {args.duration:g}"
        )
    if not 1 <= args.rounds <= 50:
        raise SixtyError(f"--rounds must be between 1 and 50, got {args.rounds}")
    if not 1 <= args.scale <= 1000:  # scale 0 seeds no owner: no token would answer
        raise SixtyError(f"--scale must be between 1 and 1000, got {args.scale}")
    ceiling.endpoints_matching(args.keyword)  # a -k that matches nothing, before seeding
    if not 1 <= args.connections <= 1000:
        raise SixtyError(f"--connections must be between 1 and 1000, got {args.connections}")
    args.out = (args.out or new_run_dir("ceiling")).resolve()
    # Both folders are made now: a path that cannot be one fails before the measuring.
    for flag, folder in (("--out", args.out), ("--flamegraphs", args.flamegraphs)):
        if folder is not None:
            make_folder(folder, flag)
    ceiling.wrk_path()
    if args.flamegraphs is not None:
        flamegraphs.py_spy_path()
    _widen_for_logs(out)
    log = _step_printer(out)
    async with workflow.seeded_database(settings, log=log) as (database, _):
        options = ceiling.Options(
            dsn=database.dsn,
            token=ceiling.token_for(settings.seed),
            duration_s=args.duration,
            rounds=args.rounds,
            connections=args.connections,
            keyword=args.keyword,
            flamegraphs=args.flamegraphs.resolve() if args.flamegraphs else None,
        )
        before = psutil.cpu_times()
        results = await asyncio.to_thread(ceiling.measure, options, out)
        cpu = ceiling.cpu_during(before, psutil.cpu_times())
    ceiling.show(out, results, args.rounds, cpu)
    path = ceiling.write(results, options, args.out, cpu)
    out.print(f"results: {path} (table: {path.with_name(ceiling.MARKDOWN_NAME)})")
    if options.flamegraphs is not None:
        svgs = sorted({name for result in results for name in result.flamegraphs.values()})
        out.print(f"flame graphs ({len(svgs)}, open in a browser): {options.flamegraphs}")
        for name in svgs:
            out.print(f"  {name}")
    return 0


def _widen_for_logs(out: Console) -> None:
    """Printing to a log or a CI page, not a terminal: do not squeeze wide tables to 80."""
    if not out.is_terminal:
        out.width = max(out.width, 132)
