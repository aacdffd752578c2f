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

AddDbFlags = Callable[..., None]
COMMANDS = ("run", "report", "gate", "compare", "selftest", "calibrate")


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
        "claims beside the measured figures with 95%% intervals, plots). Default about "
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
    add_db_flags(run, dsn=True)

    report = commands.add_parser(
        "report",
        help="render report.md and report.html from a results.json",
        description="Render the before/after report from RESULTS alone: the claims table "
        "(each seed claim beside the measured figure with its 95%% interval and a verdict), "
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
        "absolute limits ('< 0.01') and limits relative to --baseline ('+10%%'). A measured "
        "figure passes when its whole 95%% interval meets the limit, fails when none of it "
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
        description="Every metric of A and B side by side with its 95%% interval, the "
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
    path = await run(options, settings, out, log)
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


def default_budgets() -> Path:
    """``./pyproject.toml`` when it has budgets, else the one of this checkout."""
    here = Path("pyproject.toml")
    if here.is_file() and "[tool.sixty.gate]" in here.read_text(errors="replace"):
        return here
    return Path(sixty_core.__file__).resolve().parent.parent / "pyproject.toml"


def is_pipeline_command(command: str) -> bool:
    return command in COMMANDS
