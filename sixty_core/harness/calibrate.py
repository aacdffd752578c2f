"""``sixty calibrate``: measure the same code several times and propose gate budgets.

Runs the optimized profile (quick budget) ``runs`` times, each a real ``sixty run`` on
its own fresh database, and for every metric reports its run-to-run noise: mean, standard
deviation and coefficient of variation (CV). The relative budget it proposes is the
change that two runs of unchanged code exceed with probability ``false_alarm_rate``,
under a normal model of the run-to-run difference (whose spread is √2·CV):

    budget = z(1 - false_alarm_rate) · √2 · CV      (one-sided: a budget limits a rise)

Counters that never varied get ``+0%``. With few runs the CV itself is uncertain: the
report says how many runs it rests on, and more runs give a better figure.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import msgspec
from rich.console import Console
from rich.table import Table

from sixty_core.db import workflow
from sixty_core.harness import run
from sixty_core.harness.metrics import all_metrics
from sixty_core.harness.results import read
from sixty_core.harness.rundir import prepare_run_dir
from sixty_core.settings import Settings

SCHEMA = "sixty.calibrate/1"
PROFILE = "optimized"


class Noise(msgspec.Struct):
    metric: str
    values: list[float]
    mean: float
    stdev: float
    cv: float
    exact: bool
    lower_is_better: bool
    #: The proposed relative budget as a fraction (None when the mean is 0 and it varied).
    proposed: float | None


class Calibration(msgspec.Struct):
    schema: str
    runs: list[str]
    false_alarm_rate: float
    noise: list[Noise]


@dataclass(frozen=True)
class CalibrateOptions:
    out: Path
    runs: int = 3
    false_alarm_rate: float = 0.01
    progress: bool = True


def noise_of(
    metric: str, values: list[float], *, exact: bool, lower_is_better: bool, rate: float
) -> Noise:
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    cv = stdev / abs(mean) if mean else (0.0 if stdev == 0 else math.inf)
    if stdev == 0:
        proposed: float | None = 0.0
    elif math.isinf(cv):
        proposed = None
    else:
        proposed = NormalDist().inv_cdf(1 - rate) * math.sqrt(2) * cv
    return Noise(metric, values, mean, stdev, cv, exact, lower_is_better, proposed)


def budget_text(noise: Noise) -> str | None:
    """The TOML value of the proposed budget (a rise for lower-is-better metrics, a fall
    for the others), rounded up to a whole percent."""
    if noise.proposed is None:
        return None
    percent = math.ceil(noise.proposed * 100)
    return f"+{percent}%" if noise.lower_is_better else f"-{percent}%"


async def calibrate(options: CalibrateOptions, settings: Settings, console: Console) -> Calibration:
    prepare_run_dir(options.out)
    paths: list[Path] = []
    for index in range(1, options.runs + 1):
        console.rule(f"[bold]calibrate: run {index}/{options.runs}[/]")
        run_options = run.RunOptions(
            out=options.out / f"run-{index}",
            profiles=(PROFILE,),
            quick=True,
            bench=False,
            leaks=False,
            progress=options.progress,
        )
        paths.append(await run.run(run_options, settings, console, workflow.StepLog()))
    per_run = [all_metrics(read(path)) for path in paths]
    noise: list[Noise] = []
    for key, first in per_run[0].items():
        values = [m[key].value for m in per_run if key in m]
        if len(values) != len(per_run) or any(v is None for v in values):
            continue
        noise.append(
            noise_of(
                key,
                [float(v) for v in values if v is not None],
                exact=first.exact,
                lower_is_better=first.lower_is_better,
                rate=options.false_alarm_rate,
            )
        )
    result = Calibration(SCHEMA, [str(p) for p in paths], options.false_alarm_rate, noise)
    (options.out / "calibrate.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n"
    )
    return result


def noise_table(result: Calibration) -> Table:
    table = Table(
        title=f"sixty calibrate: run-to-run noise over {len(result.runs)} runs, budgets for "
        f"a {result.false_alarm_rate:.1%} false-alarm rate"
    )
    for column in ("metric", "mean", "stdev", "CV", "proposed budget"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for n in result.noise:
        table.add_row(
            n.metric,
            f"{n.mean:.4g}",
            f"{n.stdev:.3g}",
            "-" if math.isinf(n.cv) else f"{n.cv:.1%}",
            budget_text(n) or "-",
        )
    return table


def toml_snippet(result: Calibration) -> str:
    """The proposals as lines to paste under ``[tool.sixty.gate]``."""
    lines = [f"# proposed by sixty calibrate ({len(result.runs)} runs)"]
    for n in result.noise:
        text = budget_text(n)
        if text is not None:
            lines.append(f'"{n.metric}" = "{text}"')
    return "\n".join(lines) + "\n"
