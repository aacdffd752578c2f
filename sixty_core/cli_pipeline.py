"""The pipeline's commands of ``sixty``: run, report, gate, compare.

Kept apart from :mod:`sixty_core.cli` so that module stays a list of the smaller
commands; each function here parses nothing itself and calls one workflow.

``sixty gate`` and ``sixty compare`` have exit codes of their own (0 pass, 1 fail, 2
inconclusive, 3 bad input), documented in :mod:`sixty_core.harness.gate`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from rich.console import Console

import sixty_core
from sixty_core.db import workflow
from sixty_core.errors import SixtyError
from sixty_core.faults import TEST_FAULTS
from sixty_core.harness.gate import EXIT_ERROR
from sixty_core.harness.results import Results
from sixty_core.load.scenario import STANDARD
from sixty_core.profiles import parse_profile_list
from sixty_core.settings import Settings

if TYPE_CHECKING:
    from sixty_core.harness.scaling import ScaleOptions
    from sixty_core.harness.scaling_results import ScalingRecord

AddDbFlags = Callable[..., None]
COMMANDS = ("run", "report", "gate", "compare", "selftest", "calibrate", "scale")


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], add_db_flags: AddDbFlags
) -> None:
    run = commands.add_parser(
        "run",
        help="the main job: measure legacy and optimized, write results.json and the report",
        description="Provision Postgres, seed a template database once, then for each "
        "profile on its own copy of it: the standard Locust scenario (raw samples, "
        "/metrics and RSS sampled), the statement probe and a memray leak run; then the "
        "benchmark suites. Writes DIR/results.json (every raw sample and figure, the "
        "environment fingerprint), DIR/report.md and DIR/report.html (the seed report's "
        "claims beside the measured figures with 95% intervals, plots). Default about "
        "6 minutes on 2 cores; --quick under 4 minutes.",
    )
    run.add_argument(
        "--quick",
        action="store_true",
        help="the CI budget: a 20 s load per profile, fewer leak cycles, quick benchmarks",
    )
    run.add_argument(
        "--profiles",
        default="legacy,optimized",
        help="comma-separated profiles, in order (default legacy,optimized)",
    )
    run.add_argument(
        "--ablations",
        action="store_true",
        help="add one optimized-no-FLAG run per flag and attribute each metric's change "
        "to each flag (about 2 minutes per flag)",
    )
    run.add_argument(
        "--scale",
        type=int,
        default=None,
        help="seed scale (default the scenario's, 4: 20 owners, 2,000 deals)",
    )
    run.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="FAULT",
        choices=sorted(TEST_FAULTS),
        help="switch on a named test fault in every profile (a known regression the gate "
        "must catch; recorded in results.json): " + ", ".join(sorted(TEST_FAULTS)),
    )
    run.add_argument("--no-bench", action="store_true", help="skip the benchmark suites")
    run.add_argument("--no-leaks", action="store_true", help="skip the memray leak runs")
    run.add_argument(
        "--reliability",
        action="store_true",
        help="also run the reliability scenarios (see sixty reliability; --quick: the quick "
        "subset) and put the scorecard in the report",
    )
    run.add_argument(
        "--out", type=Path, default=None, help="output folder (default a new reports/runs/ one)"
    )
    run.add_argument(
        "--gate",
        action="store_true",
        help="end with sixty gate on the results (exit code as for sixty gate; a profile "
        "whose figures were inconclusive is re-measured once first, samples pooled)",
    )
    run.add_argument(
        "--baseline", type=Path, default=None, help="with --gate: the baseline results.json"
    )
    _add_budgets(run)
    run.add_argument(
        "--scales",
        type=_scales,
        default=(),
        metavar="N,N,...",
        help="also sweep these seed scales (e.g. 1,10,100) and put the growth curves in the "
        "report (see sixty scale)",
    )
    run.add_argument(
        "--load-steps",
        type=_steps,
        default=(),
        metavar="USERS,...",
        help="also run a load sweep with these user counts (e.g. 10,25,50,100,200,400) and put "
        "throughput and p99 against users in the report",
    )
    add_db_flags(run, dsn=True)

    report = commands.add_parser(
        "report",
        help="render report.md and report.html from a results.json",
        description="Render the before/after report from RESULTS alone: the claims table "
        "(each seed claim beside the measured figure with its 95% interval and a verdict), "
        "latency CDFs, RSS, cache and pool over time, throughput, ablation attribution, "
        "leak evidence, method and environment. report.html is self-contained (plots "
        "inline) and opens offline.",
    )
    report.add_argument("results", type=Path, metavar="RESULTS", help="a results.json")
    report.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.md and report.html (default: beside RESULTS)",
    )

    gate = commands.add_parser(
        "gate",
        help="the CI performance gate: hold a results.json to budgets (PASS/FAIL/INCONCLUSIVE)",
        description="Judge RESULTS by the budgets in [tool.sixty.gate] of pyproject.toml: "
        "absolute limits ('< 0.01') and limits relative to --baseline ('+10%'). A measured "
        "figure passes when its whole 95% interval meets the limit, fails when none of it "
        "does, and is INCONCLUSIVE in between; counters compare exactly. Exit codes: 0 "
        "pass, 1 fail, 2 inconclusive, 3 bad input (nothing written).",
    )
    gate.add_argument("results", type=Path, metavar="RESULTS", help="a results.json")
    gate.add_argument(
        "--baseline", type=Path, default=None, help="a results.json for the relative budgets"
    )
    _add_budgets(gate)
    gate.add_argument("--junit", type=Path, default=None, help="also write JUnit XML here")
    gate.add_argument(
        "--markdown", type=Path, default=None, help="also write a pull-request comment here"
    )
    gate.add_argument(
        "--allow-env-mismatch",
        action="store_true",
        help="compare with a baseline from another environment (flagged in every output)",
    )

    compare = commands.add_parser(
        "compare",
        help="two results.json side by side, with ratios and intervals",
        description="Every metric of A and B side by side with its 95% interval, the "
        "ratio B/A and a mark where the intervals do not overlap. Exit 0, or 3 on bad input.",
    )
    compare.add_argument("a", type=Path, metavar="A", help="the reference results.json")
    compare.add_argument("b", type=Path, metavar="B", help="the results.json to compare")
    compare.add_argument(
        "--markdown", type=Path, default=None, help="also write the comparison here"
    )
    compare.add_argument(
        "--allow-env-mismatch",
        action="store_true",
        help="compare results from different environments (flagged in the output)",
    )

    selftest = commands.add_parser(
        "selftest",
        help="the gate proves itself: A/A false alarms and every known regression caught",
        description="Measure the optimized profile (quick budget) as a baseline, then "
        "PAIRS more times (A/A: the gate must pass each; any FAIL is a false alarm), then "
        "every optimized-no-FLAG profile and the regression test faults (an extra query "
        "per request, a leaked task per request): the gate must FAIL each, and the table "
        "names the metric that caught it. About 8 minutes. Exit 0 when there was no false "
        "alarm and every regression was caught, else 1.",
    )
    selftest.add_argument(
        "--pairs", type=int, default=2, help="A/A repeats against the baseline (default 2)"
    )
    _add_budgets(selftest)
    selftest.add_argument(
        "--out", type=Path, default=None, help="output folder (default a new reports/runs/ one)"
    )
    add_db_flags(selftest, dsn=True)

    calibrate = commands.add_parser(
        "calibrate",
        help="measure the run-to-run noise of every metric and propose gate budgets",
        description="Run the optimized profile RUNS times (quick budget, about 40 s each), "
        "report each metric's mean, standard deviation and coefficient of variation, and "
        "propose the relative budget two runs of unchanged code exceed with the given "
        "false-alarm rate (normal model: z * sqrt(2) * CV). Prints lines to paste under "
        "[tool.sixty.gate]; writes DIR/calibrate.json.",
    )
    calibrate.add_argument("--runs", type=int, default=3, help="repeats (default 3, at least 2)")
    calibrate.add_argument(
        "--false-alarm-rate",
        type=float,
        default=0.01,
        help="target share of A/A comparisons a budget may fail (default 0.01)",
    )
    calibrate.add_argument(
        "--out", type=Path, default=None, help="output folder (default a new reports/runs/ one)"
    )
    add_db_flags(calibrate, dsn=True)

    _add_scale_parser(commands, add_db_flags)


def _scales(text: str) -> tuple[int, ...]:
    try:
        scales = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be whole numbers, got {text!r}") from None
    if not scales or any(not 1 <= s <= 1000 for s in scales) or len(set(scales)) < len(scales):
        raise argparse.ArgumentTypeError(
            f"scales must be distinct seed scales from 1 to 1000, e.g. 1,10,100; got {text!r}"
        )
    return tuple(sorted(scales))


def _steps(text: str) -> tuple[int, ...]:
    from sixty_core.load.shapes import parse_steps

    if text.strip().lower() == "none":
        return ()
    try:
        return parse_steps(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_scale_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], add_db_flags: AddDbFlags
) -> None:
    from sixty_core.cli import add_remote_worker_flags
    from sixty_core.harness import scaling_results as scaling
    from sixty_core.load.shapes import DEFAULT_STEPS

    scale = commands.add_parser(
        "scale",
        help="how cost grows: growth curves over data size and a load sweep over users",
        description="Data-size sweep: at each seed scale (its own template database), each "
        "profile on a fresh clone runs the standard Locust scenario for --duration seconds "
        "and the statement probe; per endpoint p50/p99, req/s, statements of a cold "
        "request, response bytes, and the service's peak RSS, each with its growth "
        "exponent over the deal count (log-log slope, 95% interval) named flat, "
        "sublinear, linear or worse. Load sweep: per profile, one Locust run holding each "
        "user count of --load-steps for --step-s seconds; throughput and p99 per step, the "
        "saturation point and the best throughput within --p99-budget-ms. Writes "
        "DIR/scale.json, DIR/scale.md, DIR/growth.png and DIR/load-sweep.png. The "
        "defaults take about 7 minutes on 2 cores.",
    )
    scale.add_argument(
        "--scales",
        type=_scales,
        default=scaling.DEFAULT_SCALES,
        metavar="N,N,...",
        help="seed scales, 500 deals each (default 1,10,100)",
    )
    scale.add_argument(
        "--profiles",
        default="legacy,optimized",
        help="comma-separated profiles (default legacy,optimized)",
    )
    scale.add_argument(
        "--duration",
        type=float,
        default=scaling.DEFAULT_DURATION_S,
        help=f"seconds of load per profile and scale (default {scaling.DEFAULT_DURATION_S:g})",
    )
    scale.add_argument(
        "--load-steps",
        type=_steps,
        default=DEFAULT_STEPS,
        metavar="USERS,...",
        help="user counts of the load sweep, rising (default "
        + ",".join(map(str, DEFAULT_STEPS))
        + "); none to skip it",
    )
    scale.add_argument(
        "--step-s",
        type=float,
        default=scaling.DEFAULT_STEP_S,
        help=f"seconds each load step is held (default {scaling.DEFAULT_STEP_S:g}; the first "
        "third, at most 10 s, is left out as the ramp)",
    )
    scale.add_argument(
        "--load-scale",
        type=int,
        default=STANDARD.seed_scale,
        help=f"seed scale of the load sweep (default {STANDARD.seed_scale})",
    )
    scale.add_argument(
        "--p99-budget-ms",
        type=float,
        default=scaling.DEFAULT_P99_BUDGET_MS,
        help="the load sweep reports the best throughput whose p99 stays within this "
        f"(default {scaling.DEFAULT_P99_BUDGET_MS:g})",
    )
    scale.add_argument(
        "--host",
        default=None,
        help="drive a deployed service at this URL instead (load sweep; --scales must be "
        "the one scale it was seeded with)",
    )
    scale.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Locust worker processes on this machine (default 0: one Locust process)",
    )
    add_remote_worker_flags(scale)
    scale.add_argument(
        "--out", type=Path, default=None, help="output folder (default a new reports/runs/ one)"
    )
    add_db_flags(scale, dsn=True)


def _add_budgets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budgets",
        type=Path,
        default=None,
        metavar="PYPROJECT",
        help="the pyproject.toml holding [tool.sixty.gate] (default ./pyproject.toml when "
        "it has that table, else this checkout's)",
    )


async def dispatch(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    if not out.is_terminal:
        # A log or a CI page, not a terminal: keep metric names whole in the tables.
        out.width = max(out.width, 160)
    if args.command == "run":
        return await _run(args, settings, out)
    if args.command == "report":
        return _report(args, out)
    if args.command == "selftest":
        return await _selftest(args, settings, out)
    if args.command == "calibrate":
        return await _calibrate(args, settings, out)
    if args.command == "scale":
        return await _scale(args, settings, out)
    err = Console(stderr=True, highlight=False)
    if args.command == "gate":
        from sixty_core.harness.gate_report import run_gate

        return run_gate(
            args.results,
            pyproject=args.budgets or default_budgets(),
            baseline_path=args.baseline,
            junit_path=args.junit,
            markdown_path=args.markdown,
            allow_env_mismatch=args.allow_env_mismatch,
            console=out,
            error_console=err,
        )
    if args.command == "compare":
        from sixty_core.harness.compare import run_compare

        return run_compare(
            args.a,
            args.b,
            allow_env_mismatch=args.allow_env_mismatch,
            console=out,
            markdown_path=args.markdown,
            error_console=err,
        )
    raise SixtyError(f"unknown command {args.command}")


async def _run(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from sixty_core.harness import report
    from sixty_core.harness.run import RunOptions, run
    from sixty_core.harness.rundir import new_run_dir

    profiles = parse_profile_list(args.profiles)
    remeasure = None
    if args.gate:
        remeasure = _gate_remeasure(args)
        if remeasure is None:
            return EXIT_ERROR
    elif args.baseline is not None or args.budgets is not None:
        raise SixtyError("--baseline and --budgets go with --gate")
    scenario = STANDARD
    if args.scale is not None:
        if not 1 <= args.scale <= 1000:
            raise SixtyError(f"--scale must be between 1 and 1000, got {args.scale}")
        scenario = msgspec.structs.replace(scenario, seed_scale=args.scale)
    options = RunOptions(
        scenario=scenario,
        out=(args.out or new_run_dir("quick" if args.quick else "run")).resolve(),
        profiles=profiles,
        quick=args.quick,
        ablations=args.ablations,
        bench=not args.no_bench,
        leaks=not args.no_leaks,
        progress=out.is_terminal,
        test_faults={p: frozenset(args.inject) for p in profiles} if args.inject else {},
        remeasure=remeasure,
    )
    started = time.monotonic()
    log = workflow.StepLog(
        on_step=lambda name, s: out.print(f"  [green]✓[/] {name:<24} {s:7.1f} s")
    )
    if args.scales and len(args.scales) < 2:
        raise SixtyError("--scales needs two or more scales for a growth curve, e.g. 1,10,100")
    path = await run(options, settings, out, log)
    if args.scales or args.load_steps:
        await _run_sweeps(args, options.out, path, profiles, settings, out, log)
    if args.reliability:
        await _run_reliability(args.quick, options.out, path, profiles, settings, out, log)
    paths = report.render(path, options.out)
    out.rule("[bold]summary[/]")
    out.print(report.claims_table(path))
    out.print(
        f"[green]✓[/] sixty run finished in {time.monotonic() - started:.0f} s\n"
        f"  results: {path}\n  report:  {paths.markdown}\n  html:    {paths.html}"
    )
    if not args.gate:
        return 0
    from sixty_core.harness.gate_report import run_gate

    return run_gate(
        path,
        pyproject=args.budgets or default_budgets(),
        baseline_path=args.baseline,
        junit_path=options.out / "gate.xml",
        markdown_path=options.out / "gate.md",
        console=out,
        error_console=Console(stderr=True, highlight=False),
    )


async def _run_sweeps(
    args: argparse.Namespace,
    folder: Path,
    results_path: Path,
    profiles: tuple[str, ...],
    settings: Settings,
    out: Console,
    log: workflow.StepLog,
) -> None:
    """``sixty run --scales/--load-steps``: the sweeps into ``folder/scaling`` and their
    record into ``results.json`` (rewritten whole), so the report shows them."""
    from sixty_core.harness import results as results_file
    from sixty_core.harness import scaling
    from sixty_core.harness.scaling_results import DEFAULT_DURATION_S, read

    out.rule("[bold]how cost grows[/]")
    # --quick halves the sweeps' time per point, as it shortens the run's own load.
    per_point_s = DEFAULT_DURATION_S / 2 if args.quick else DEFAULT_DURATION_S
    options = scaling.ScaleOptions(
        out=folder / "scaling",
        scales=args.scales or (STANDARD.seed_scale,),
        profiles=profiles,
        duration_s=per_point_s,
        load_steps=args.load_steps,
        step_s=per_point_s,
        load_scale=args.scale or STANDARD.seed_scale,
        progress=out.is_terminal,
    )
    record = read(await scaling.sweep(options, settings, out, log))
    results = results_file.read(results_path)
    results.scaling = record
    results_file.write(results, results_path)


async def _run_reliability(
    quick: bool,
    folder: Path,
    results_path: Path,
    profiles: tuple[str, ...],
    settings: Settings,
    out: Console,
    log: workflow.StepLog,
) -> None:
    """``sixty run --reliability``: the scenarios into ``folder/reliability`` and their
    record into ``results.json`` (rewritten whole), so the report shows the scorecard."""
    from sixty_core.harness import results as results_file
    from sixty_core.harness.rundir import write_whole
    from sixty_core.reliability import catalog, runner, table
    from sixty_core.reliability.outcome import Outcome
    from sixty_core.reliability.scorecard import read

    out.rule("[bold]reliability[/]")
    options = runner.ReliabilityOptions(
        out=folder / "reliability",
        profiles=profiles,
        scenarios=catalog.select(None, quick=quick),
        quick=quick,
    )

    def done(outcome: Outcome) -> None:
        verdict = "pass" if outcome.passed else f"FAIL: {outcome.findings[0]}"
        out.print(f"  {outcome.profile:<10} {outcome.scenario:<4} {verdict}", highlight=False)

    with log.step("reliability"):
        record = read(await runner.run(options, settings, on_outcome=done))
    write_whole({options.out / "reliability.md": table.markdown(record)})
    results = results_file.read(results_path)
    results.reliability = record
    results_file.write(results, results_path)


def _gate_remeasure(args: argparse.Namespace) -> Callable[[Results], set[str]] | None:
    """The profiles to measure again: those with an inconclusive measured figure. Budgets
    and baseline are read now, so bad input stops the run before it starts (None, after
    one line naming the problem)."""
    from sixty_core.harness import gate
    from sixty_core.harness.gate_report import print_error
    from sixty_core.harness.results import read

    try:
        budgets = gate.load_budgets(args.budgets or default_budgets())
        baseline = read(args.baseline) if args.baseline is not None else None
    except SixtyError as exc:
        print_error(Console(stderr=True, highlight=False), "sixty run", exc)
        return None

    def inconclusive(results: Results) -> set[str]:
        try:
            checks = gate.evaluate(results, budgets, baseline)
        except gate.GateError:
            return set()  # reported by the gate itself at the end
        # A figure the run did not measure stays unmeasured however often it runs.
        return {
            c.profile
            for c in checks
            if c.verdict is gate.Verdict.INCONCLUSIVE and c.value is not None
        }

    return inconclusive


def _report(args: argparse.Namespace, out: Console) -> int:
    from sixty_core.harness import report
    from sixty_core.harness.gate_report import print_error
    from sixty_core.harness.results import ResultsError

    folder = (args.out or args.results.parent).resolve()
    try:
        paths = report.render(args.results.resolve(), folder)
    except ResultsError as exc:
        print_error(Console(stderr=True, highlight=False), "sixty report", exc)
        return EXIT_ERROR
    out.print(report.claims_table(args.results.resolve()))
    out.print(f"report: {paths.markdown}\nhtml:   {paths.html}")
    return 0


async def _selftest(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from sixty_core.harness import selftest
    from sixty_core.harness.rundir import new_run_dir

    if not 1 <= args.pairs <= 20:
        raise SixtyError(f"--pairs must be between 1 and 20, got {args.pairs}")
    folder = (args.out or new_run_dir("selftest")).resolve()
    result = await selftest.selftest(
        folder,
        pairs=args.pairs,
        pyproject=args.budgets or default_budgets(),
        settings=settings,
        console=out,
        progress=out.is_terminal,
    )
    out.print(selftest.sensitivity_table(result))
    out.print(
        f"A/A: {result.false_alarms} false alarm(s) in {len(result.pairs)} pair(s) "
        f"({result.false_alarm_rate:.0%}); known regressions caught: "
        f"{len(result.regressions) - len(result.missed)} of {len(result.regressions)}"
        + (f"; missed: {', '.join(result.missed)}" if result.missed else "")
    )
    out.print(f"results: {folder / 'selftest.json'}")
    return 0 if selftest.passed(result) else 1


async def _calibrate(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from sixty_core.harness import calibrate
    from sixty_core.harness.rundir import new_run_dir

    if not 2 <= args.runs <= 20:
        raise SixtyError(f"--runs must be between 2 and 20, got {args.runs}")
    if not 0 < args.false_alarm_rate < 0.5:
        raise SixtyError(
            f"--false-alarm-rate must be above 0 and below 0.5, got {args.false_alarm_rate}"
        )
    options = calibrate.CalibrateOptions(
        out=(args.out or new_run_dir("calibrate")).resolve(),
        runs=args.runs,
        false_alarm_rate=args.false_alarm_rate,
        progress=out.is_terminal,
    )
    result = await calibrate.calibrate(options, settings, out)
    out.print(calibrate.noise_table(result))
    out.print(calibrate.toml_snippet(result), markup=False, highlight=False)
    out.print(f"results: {options.out / 'calibrate.json'}")
    return 0


def _scale_options(args: argparse.Namespace, out: Console) -> ScaleOptions:
    from sixty_core.cli import check_remote_workers
    from sixty_core.harness.rundir import new_run_dir
    from sixty_core.harness.scaling import ScaleOptions

    if not 0 <= args.workers <= 16:
        raise SixtyError(f"--workers must be 0 to 16, got {args.workers}")
    check_remote_workers(args)
    if not 1 <= args.load_scale <= 1000:
        raise SixtyError(f"--load-scale must be between 1 and 1000, got {args.load_scale}")
    options = ScaleOptions(
        out=(args.out or new_run_dir("scale")).resolve(),
        scales=args.scales,
        profiles=parse_profile_list(args.profiles),
        duration_s=args.duration,
        load_steps=args.load_steps,
        step_s=args.step_s,
        load_scale=args.load_scale,
        p99_budget_ms=args.p99_budget_ms,
        host=args.host,
        workers=args.workers,
        remote_workers=args.remote_workers,
        master_bind=args.master_bind,
        progress=out.is_terminal,
    )
    options.check()
    return options


async def _scale(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from sixty_core.harness import scaling, scaling_report
    from sixty_core.harness.rundir import write_whole
    from sixty_core.harness.scaling_results import read

    options = _scale_options(args, out)
    log = workflow.StepLog(
        on_step=lambda name, s: out.print(f"  [green]✓[/] {name:<28} {s:7.1f} s")
    )
    path = await scaling.sweep(options, settings, out, log)
    record = read(path)
    write_whole({options.out / name: data for name, data in scaling_report.outputs(record).items()})
    out.rule("[bold]summary[/]")
    _print_scaling(record, out)
    out.print(f"[green]✓[/] sixty scale finished in {record.wall_s:.0f} s\n  results: {path}")
    out.print(f"  report:  {options.out / 'scale.md'}")
    return 0


def _print_scaling(record: ScalingRecord, out: Console) -> None:
    from rich.table import Table

    from sixty_core.harness import scaling_report

    for title, (header, rows) in (
        ("growth over deal count", scaling_report.exponent_table(record)),
        ("load sweep", scaling_report.sweep_table(record)),
    ):
        if not rows:
            continue
        table = Table(title=title)
        for column in header:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        out.print(table)
    for line in scaling_report.sweep_lines(record):
        out.print(f"  {line}")


def default_budgets() -> Path:
    """``./pyproject.toml`` when it has budgets, else the one of this checkout."""
    here = Path("pyproject.toml")
    if here.is_file() and "[tool.sixty.gate]" in here.read_text(errors="replace"):
        return here
    return sixty_core.SOURCE_ROOT / "pyproject.toml"


def is_pipeline_command(command: str) -> bool:
    return command in COMMANDS
