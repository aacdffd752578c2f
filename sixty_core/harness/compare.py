"""``sixty compare A B``: two runs' figures side by side, and which of them moved.

For every metric both results hold: A's value and 95% interval, B's, the ratio B/A with a
conservative interval (B.low/A.high .. B.high/A.low, given only when both intervals are
positive: a ratio across zero bounds nothing), and a *changed* mark when the two
intervals do not overlap; an exact counter is changed when its values differ. A figure
measured once (peak RSS, pool efficiency) has its point as its interval, so any
difference marks it; the mark carries a dagger saying so, since such a move may be noise.

The two runs must come from one environment, exactly as for the gate
(:func:`~.gate.check_environment`, the same refusal and the same
``--allow-env-mismatch`` warning on every output). Exit 0, or 3 on bad input with one
line naming the file and the problem, and nothing written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sixty_core.errors import SixtyError
from sixty_core.harness import results as results_file
from sixty_core.harness.gate import (
    EXIT_ERROR,
    EXIT_PASS,
    check_environment,
    format_interval,
    format_number,
)
from sixty_core.harness.gate_report import md_cell, print_error
from sixty_core.harness.metrics import Metric, all_metrics
from sixty_core.harness.results import Results
from sixty_core.harness.rundir import write_whole

ONCE_NOTE = (
    "† measured once: no interval, so any difference shows; `sixty calibrate` sizes the noise"
)


@dataclass(frozen=True)
class Comparison:
    """One metric in both runs. ``ratio`` is B/A (None when either is unmeasured or A is
    0); ``ratio_low``/``ratio_high`` its conservative interval (None when it is not
    bounded)."""

    key: str
    a: Metric
    b: Metric
    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None
    changed: bool

    @property
    def measured_once(self) -> bool:
        """Both figures are single measurements, so ``changed`` may be noise."""
        return not self.a.exact and _is_point(self.a) and _is_point(self.b)

    @property
    def mark(self) -> str:
        """``changed (better)`` / ``changed (worse)``, with a dagger when measured once."""
        if not self.changed or self.a.value is None or self.b.value is None:
            return ""
        better = (self.b.value < self.a.value) == self.a.lower_is_better
        return f"changed ({'better' if better else 'worse'}){'†' if self.measured_once else ''}"


def _is_point(metric: Metric) -> bool:
    return metric.low == metric.high == metric.value


def _bounds(metric: Metric) -> tuple[float, float]:
    """The metric's interval; an exact counter's value is its whole interval."""
    assert metric.value is not None
    if metric.exact or metric.low is None or metric.high is None:
        return metric.value, metric.value
    return metric.low, metric.high


def compare_metrics(a: Metric, b: Metric) -> Comparison:
    """``b`` against ``a`` (the same metric of two runs)."""
    if a.value is None or b.value is None:
        return Comparison(a.key, a, b, None, None, None, changed=False)
    (a_low, a_high), (b_low, b_high) = _bounds(a), _bounds(b)
    # A counter's bounds are its value, so for counters this is plain inequality.
    changed = a_high < b_low or b_high < a_low
    if a.value == 0:
        return Comparison(a.key, a, b, None, None, None, changed)
    ratio = b.value / a.value
    if a_low > 0 and b_low >= 0:
        # The widest quotient the two intervals allow: B's ends over A's opposite ends.
        return Comparison(a.key, a, b, ratio, b_low / a_high, b_high / a_low, changed)
    return Comparison(a.key, a, b, ratio, None, None, changed)


def compare(a: Results, b: Results) -> list[Comparison]:
    """Every metric present in both runs, in A's order."""
    ours, theirs = all_metrics(a), all_metrics(b)
    return [compare_metrics(metric, theirs[key]) for key, metric in ours.items() if key in theirs]


def _figure(metric: Metric) -> str:
    if metric.value is None:
        return "not measured"
    if metric.exact or _is_point(metric):
        return format_number(metric.value)
    return f"{format_number(metric.value)} {format_interval(metric.low, metric.high)}"


def _ratio(row: Comparison) -> str:
    if row.ratio is None:
        return "n/a"
    if row.ratio_low is None or row.ratio_low == row.ratio_high == row.ratio:
        return format_number(row.ratio)
    return f"{format_number(row.ratio)} {format_interval(row.ratio_low, row.ratio_high)}"


def _notes(rows: Sequence[Comparison], warnings: Sequence[str]) -> list[str]:
    notes = [f"warning: {w}" for w in warnings]
    if any(row.changed and row.measured_once for row in rows):
        notes.append(ONCE_NOTE)
    return notes


def summary(rows: Sequence[Comparison]) -> str:
    changed = sum(1 for row in rows if row.changed)
    return f"sixty compare: {len(rows)} metrics in both runs, {changed} changed"


def table(rows: Sequence[Comparison], warnings: Sequence[str] = ()) -> Table:
    """The comparison as a rich table; ``warnings`` and footnotes as its caption."""
    view = Table(title="sixty compare", caption="\n".join(_notes(rows, warnings)) or None)
    for column in ("metric", "A", "B", "B/A", "changed"):
        view.add_column(column, overflow="fold")
    for row in rows:
        colour = "bold red" if "worse" in row.mark else "bold green"
        view.add_row(
            Text(row.key),
            Text(_figure(row.a)),
            Text(_figure(row.b)),
            Text(_ratio(row)),
            Text(row.mark, style=colour),
        )
    if warnings:
        view.caption_style = "bold yellow"
    return view


def markdown(rows: Sequence[Comparison], warnings: Sequence[str] = (), *, names: str = "") -> str:
    """A pull-request comment: a headline (``names`` says what A and B are), warnings and
    footnotes as quoted lines, then one table row per metric."""
    lines = [f"**{summary(rows)}**{f' ({md_cell(names)})' if names else ''}", ""]
    notes = _notes(rows, warnings)
    lines += [f"> {md_cell(note)}" for note in notes]
    if notes:
        lines.append("")
    lines += ["| metric | A | B | B/A | changed |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (f"`{row.key}`", _figure(row.a), _figure(row.b), _ratio(row), row.mark)
        lines.append("| " + " | ".join(md_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def run_compare(
    a_path: Path,
    b_path: Path,
    *,
    allow_env_mismatch: bool = False,
    console: Console,
    markdown_path: Path | None = None,
    error_console: Console | None = None,
) -> int:
    """Print ``b_path``'s figures against ``a_path``'s (and write them as Markdown when
    asked); 0, or :data:`~.gate.EXIT_ERROR` after one line naming the file and the problem
    (on ``error_console``, by default ``console``) when either file cannot be read or the
    environments differ, with nothing written."""
    names = f"A = {a_path}, B = {b_path}"
    try:
        a, b = results_file.read(a_path), results_file.read(b_path)
        warnings = check_environment(a, b, allow_env_mismatch, against=str(b_path))
        rows = compare(a, b)
        if markdown_path is not None:
            write_whole({markdown_path: markdown(rows, warnings, names=names)})
    except SixtyError as exc:
        print_error(error_console or console, "sixty compare", exc)
        return EXIT_ERROR
    console.print(names, markup=False, highlight=False, soft_wrap=True)
    console.print(table(rows, warnings))
    console.print(summary(rows), markup=False, highlight=False, soft_wrap=True)
    return EXIT_PASS
