"""``sixty reliability``: the fault, cache, auth and tenant scenarios against each profile,
written as a scorecard (``reliability.json``, ``reliability.md``) and printed as tables."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sixty_core.errors import ConfigError
from sixty_core.profiles import resolve_profile
from sixty_core.reliability import catalog
from sixty_core.reliability.outcome import Outcome
from sixty_core.settings import Settings


def _profiles(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise argparse.ArgumentTypeError("give at least one profile, e.g. legacy,optimized")
    for name in names:
        try:
            resolve_profile(name)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_db_flags: Callable[..., None],
) -> None:
    ids = ", ".join(f"{s.id}{'' if s.quick else '*'}" for s in catalog.SCENARIOS)
    parser = commands.add_parser(
        "reliability",
        help="fault, cache, auth and tenant scenarios per profile, as a scorecard",
        description="Run the RELIABILITY.md scenarios against each profile: each on a fresh "
        "copy of the seeded database, with the service, the edge upstream and two fault "
        "proxies (database, edge) started in this process. Database faults (killed "
        "backends, a database that goes down or black-holes), edge faults (5xx, hangs, slow "
        "or truncated answers, retry storms), read-your-writes, single-flight, revocation, "
        "tenant isolation, lost updates, idempotent retries and refleak rounds. Writes "
        "DIR/reliability.json and DIR/reliability.md and prints the scorecard; legacy is "
        "expected to fail many scenarios, and each failure is listed as a finding. "
        f"Scenarios: {ids} (* = not in --quick). Exit 0 when every scenario of the last "
        "profile given passed, 1 when one failed.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the scenarios that take seconds (no black hole, slow edge, retry storm, "
        "token spray)",
    )
    parser.add_argument(
        "--profiles",
        type=_profiles,
        default=("legacy", "optimized"),
        help="comma-separated profiles (default legacy,optimized)",
    )
    parser.add_argument(
        "--scenarios",
        default=None,
        metavar="IDS",
        help="comma-separated scenario ids to run (e.g. P1,P10,E2); default all",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default a new folder under reports/runs/)",
    )
    add_db_flags(parser, dsn=True)


async def run(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from sixty_core.harness.rundir import new_run_dir, write_whole
    from sixty_core.reliability import runner, table
    from sixty_core.reliability.scorecard import read

    try:
        scenarios = catalog.select(args.scenarios, quick=args.quick)
    except ValueError as exc:
        Console(stderr=True).print(f"[red]sixty reliability:[/] {exc}")
        return 2
    out_dir = args.out or new_run_dir("reliability")
    options = runner.ReliabilityOptions(
        out=out_dir, profiles=args.profiles, scenarios=scenarios, quick=args.quick
    )
    total = len(scenarios) * len(args.profiles)
    out.print(
        f"[bold]sixty reliability[/]: {len(scenarios)} scenarios x {len(args.profiles)} "
        f"profile(s) on the {settings.db_backend} Postgres -> {out_dir}"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=out,
        disable=not out.is_terminal,
    ) as progress:
        task = progress.add_task("scenarios", total=total)

        def done(outcome: Outcome) -> None:
            mark = "[green]pass[/]" if outcome.passed else "[red]FAIL[/]"
            first = "" if outcome.passed else f": {outcome.findings[0]}"
            progress.console.print(
                f"  {mark} {outcome.profile:<10} {outcome.scenario:<4} {outcome.title}"
                f" ({outcome.seconds:.1f} s){first}",
                markup=True,
                highlight=False,
            )
            progress.advance(task)

        path = await runner.run(options, settings, on_outcome=done)
    record = read(path)
    write_whole({out_dir / "reliability.md": table.markdown(record)})
    for title, (header, rows) in (
        ("reliability scorecard", table.scorecard_table(record)),
        ("scenarios", table.scenario_table(record)),
    ):
        grid = Table(title=title)
        for column in header:
            grid.add_column(column, overflow="fold")
        for row in rows:
            grid.add_row(*row)
        out.print(grid)
    last = record.scorecards[-1]
    out.print(f"  results: {path}\n  report:  {out_dir / 'reliability.md'}")
    return 0 if last.scenarios_passed == last.scenarios_run else 1
