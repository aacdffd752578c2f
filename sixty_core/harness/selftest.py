"""``sixty selftest``: the gate measures its own false-alarm rate and its power.

1. **A/A**: the optimized profile is measured once as the baseline, then ``pairs`` more
   times; each repeat is gated against the baseline with the repository's budgets. Any
   FAIL is a false alarm (the code did not change); the rate is false alarms / pairs.
2. **Known regressions**: every ``optimized-no-FLAG`` profile and every named test fault
   that models a regression (an extra query per request, a leaked task per request,
   writes that leave cached reads stale) is
   measured, relabelled ``optimized`` and gated against the same baseline. Each must
   FAIL, and the table names the metrics that caught it. A regression that passes is a
   blind spot of the budgets, reported as such.

Every run is a real ``sixty run`` (quick budget, one profile, leak run only where the
regression is a leak), so the figures carry the machine's real noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from sixty_core.db import workflow
from sixty_core.harness import gate, run
from sixty_core.harness.results import Results, read
from sixty_core.harness.rundir import prepare_run_dir
from sixty_core.profiles import FLAGS
from sixty_core.settings import Settings

SCHEMA = "sixty.selftest/1"
BASE_PROFILE = "optimized"
#: Test faults that model a regression, and whether a leak run is needed to see it.
FAULTS: dict[str, bool] = {"extra_query": False, "task_per_request": True, "stale_cache": False}
#: Flags whose loss only a leak run shows.
LEAK_FLAGS = frozenset({"resource_tracking"})


@dataclass(frozen=True)
class Regression:
    """A known regression: a profile, test faults, and whether it needs a leak run."""

    name: str
    profile: str
    faults: frozenset[str]
    leaks: bool


def known_regressions() -> list[Regression]:
    flags = [
        Regression(f"no {flag}", f"optimized-no-{flag}", frozenset(), flag in LEAK_FLAGS)
        for flag in FLAGS
    ]
    faults = [
        Regression(f"fault {name}", BASE_PROFILE, frozenset({name}), leaks)
        for name, leaks in FAULTS.items()
    ]
    return flags + faults


class Outcome(msgspec.Struct):
    name: str
    results: str
    verdict: str
    caught_by: list[str]
    inconclusive: list[str]


class SelftestResult(msgspec.Struct):
    schema: str
    baseline: str
    budgets: str
    pairs: list[Outcome]
    false_alarms: int
    false_alarm_rate: float
    regressions: list[Outcome]
    missed: list[str]


def relabel(results: Results, profile: str) -> Results:
    """``results`` with its one profile named ``profile`` (so budgets naming
    ``optimized.*`` apply to a regression measured under another profile's name)."""
    records = [msgspec.structs.replace(r, profile=profile) for r in results.profiles]
    return msgspec.structs.replace(results, profiles=records)


def judge(name: str, path: Path, budgets: Sequence[gate.Budget], baseline: Results) -> Outcome:
    candidate = relabel(read(path), BASE_PROFILE)
    # A budget on a figure this run did not measure (a leak count without a leak run)
    # says nothing about it either way.
    checks = [c for c in gate.evaluate(candidate, budgets, baseline) if c.value is not None]
    failed = [c.metric for c in checks if c.verdict is gate.Verdict.FAIL]
    unsure = [c.metric for c in checks if c.verdict is gate.Verdict.INCONCLUSIVE]
    return Outcome(name, str(path), gate.overall(checks).value, failed, unsure)


async def selftest(
    out: Path,
    *,
    pairs: int,
    pyproject: Path,
    settings: Settings,
    console: Console,
    progress: bool,
) -> SelftestResult:
    prepare_run_dir(out)
    budgets = gate.load_budgets(pyproject)
    base_options = run.RunOptions(
        out=out / "baseline",
        profiles=(BASE_PROFILE,),
        quick=True,
        bench=False,
        leaks=False,
        progress=progress,
    )

    async def measure(options: run.RunOptions) -> Path:
        log = workflow.StepLog()
        return await run.run(options, settings, console, log)

    console.rule("[bold]selftest: baseline[/]")
    baseline_path = await measure(base_options)
    baseline = read(baseline_path)
    outcomes: list[Outcome] = []
    for index in range(1, pairs + 1):
        console.rule(f"[bold]selftest: A/A {index}/{pairs}[/]")
        path = await measure(replace(base_options, out=out / f"aa-{index}"))
        outcomes.append(judge(f"A/A {index}", path, budgets, baseline))
    regressions: list[Outcome] = []
    for regression in known_regressions():
        console.rule(f"[bold]selftest: {regression.name}[/]")
        folder = out / regression.name.replace(" ", "-")
        path = await measure(
            replace(
                base_options,
                out=folder,
                profiles=(regression.profile,),
                leaks=regression.leaks,
                test_faults={regression.profile: regression.faults} if regression.faults else {},
            )
        )
        regressions.append(judge(regression.name, path, budgets, baseline))
    false_alarms = sum(1 for o in outcomes if o.caught_by)
    result = SelftestResult(
        schema=SCHEMA,
        baseline=str(baseline_path),
        budgets=str(pyproject),
        pairs=outcomes,
        false_alarms=false_alarms,
        false_alarm_rate=false_alarms / len(outcomes) if outcomes else 0.0,
        regressions=regressions,
        missed=[o.name for o in regressions if not o.caught_by],
    )
    (out / "selftest.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n"
    )
    return result


def passed(result: SelftestResult) -> bool:
    return result.false_alarms == 0 and not result.missed


def sensitivity_table(result: SelftestResult) -> Table:
    table = Table(title="sixty selftest: what the gate catches")
    for column in ("run", "expected", "gate", "caught by (FAIL)", "inconclusive"):
        table.add_column(column)
    for outcome in result.pairs:
        table.add_row(
            outcome.name,
            "PASS",
            _coloured(outcome.verdict, ok=not outcome.caught_by),
            ", ".join(outcome.caught_by) or "-",
            ", ".join(outcome.inconclusive) or "-",
        )
    for outcome in result.regressions:
        table.add_row(
            outcome.name,
            "FAIL",
            _coloured(outcome.verdict, ok=bool(outcome.caught_by)),
            ", ".join(outcome.caught_by) or "[red]missed: no budget caught it[/]",
            ", ".join(outcome.inconclusive) or "-",
        )
    return table


def _coloured(verdict: str, *, ok: bool) -> str:
    return f"[{'green' if ok else 'red'}]{verdict}[/]"
