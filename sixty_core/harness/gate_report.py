"""The gate's outputs: a rich table, JUnit XML, a Markdown pull-request comment, and
:func:`run_gate`, the command that reads, judges, then writes them whole or not at all.

The judging itself (budgets, verdicts, environments, exit codes) is :mod:`.gate`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sixty_core.errors import SixtyError
from sixty_core.harness import results as results_file
from sixty_core.harness.gate import (
    _COLOURS,
    EXIT_ERROR,
    SUITE_NAME,
    Check,
    Verdict,
    check_environment,
    evaluate,
    exit_code,
    format_interval,
    format_number,
    load_budgets,
    overall,
)
from sixty_core.harness.rundir import write_whole


def _measured(check: Check) -> str:
    if check.value is None:
        return "not measured"
    if check.low == check.high == check.value:
        return format_number(check.value)
    return f"{format_number(check.value)} {format_interval(check.low, check.high)}"


def _budget_cell(check: Check) -> str:
    if check.baseline is None or check.bound is None:
        return check.limit
    resolved = f"{check.op} {format_number(check.bound)}"
    return f"{check.limit} of {format_number(check.baseline)}: {resolved}"


def _tally(checks: Sequence[Check]) -> str:
    counts = {v: sum(1 for c in checks if c.verdict is v) for v in Verdict}
    parts = [
        f"{counts[Verdict.FAIL]} failed",
        f"{counts[Verdict.INCONCLUSIVE]} inconclusive",
        f"{counts[Verdict.PASS]} passed",
        f"{counts[Verdict.SKIPPED]} skipped",
    ]
    return f"{', '.join(parts)} of {len(checks)} checks"


def summary(checks: Sequence[Check]) -> str:
    """One line: the overall verdict, the tally and the exit code."""
    return f"{SUITE_NAME}: {overall(checks)}: {_tally(checks)} (exit {exit_code(checks)})"


def table(checks: Sequence[Check], warnings: Sequence[str] = ()) -> Table:
    """The checks as a rich table, verdicts coloured; ``warnings`` as its caption."""
    view = Table(title=SUITE_NAME, caption="\n".join(f"warning: {w}" for w in warnings) or None)
    for column in ("verdict", "metric", "budget", "measured", "reason"):
        view.add_column(column, overflow="fold")
    for check in checks:
        view.add_row(
            Text(check.verdict, style=_COLOURS[check.verdict]),
            Text(check.metric),
            Text(_budget_cell(check)),
            Text(_measured(check)),
            Text(check.reason),
        )
    if warnings:
        view.caption_style = "bold yellow"
    return view


def junit_xml(checks: Sequence[Check], warnings: Sequence[str] = ()) -> str:
    """The checks as JUnit XML: one testsuite, one testcase per check (classname the
    profile, name the metric); FAIL is a failure, INCONCLUSIVE and SKIPPED are skipped;
    ``warnings`` become suite properties and system-out."""
    failures = sum(1 for c in checks if c.verdict is Verdict.FAIL)
    skipped = sum(1 for c in checks if c.verdict in (Verdict.INCONCLUSIVE, Verdict.SKIPPED))
    counts = {"tests": str(len(checks)), "failures": str(failures), "errors": "0"}
    root = ET.Element("testsuites", counts)
    suite = ET.SubElement(root, "testsuite", {"name": SUITE_NAME, **counts})
    suite.set("skipped", str(skipped))
    if warnings:
        properties = ET.SubElement(suite, "properties")
        for warning in warnings:
            ET.SubElement(properties, "property", {"name": "warning", "value": warning})
    for check in checks:
        case = ET.SubElement(
            suite, "testcase", {"classname": check.profile, "name": check.metric, "time": "0"}
        )
        detail = (
            f"budget: {check.budget} = {check.limit!r}\nmeasured: {_measured(check)} "
            f"{check.unit}\nbaseline: {format_number(check.baseline)}\nsource: {check.source}"
        )
        if check.verdict is Verdict.FAIL:
            ET.SubElement(
                case, "failure", {"message": check.reason, "type": "budget"}
            ).text = detail
        elif check.verdict is Verdict.INCONCLUSIVE:
            ET.SubElement(case, "skipped", {"message": f"inconclusive: {check.reason}"})
        elif check.verdict is Verdict.SKIPPED:
            ET.SubElement(case, "skipped", {"message": f"skipped: {check.reason}"})
    if warnings:
        ET.SubElement(suite, "system-out").text = "".join(f"warning: {w}\n" for w in warnings)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


_HEADLINES = {
    Verdict.PASS: "✅ **sixty gate: PASS**",
    Verdict.FAIL: "❌ **sixty gate: FAIL**",
    Verdict.INCONCLUSIVE: "⚠️ **sixty gate: INCONCLUSIVE**",
}


def markdown(checks: Sequence[Check], warnings: Sequence[str] = ()) -> str:
    """A pull-request comment: the headline verdict with its tally, any ``warnings`` as
    quoted lines, then one table row per check."""
    lines = [f"{_HEADLINES[overall(checks)]}: {_tally(checks)}", ""]
    lines += [f"> **Warning:** {md_cell(w)}" for w in warnings]
    if warnings:
        lines.append("")
    lines += ["| verdict | metric | budget | measured | reason |", "|---|---|---|---|---|"]
    for c in checks:
        cells = (f"**{c.verdict}**", f"`{c.metric}`", _budget_cell(c), _measured(c), c.reason)
        lines.append("| " + " | ".join(md_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def md_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (pipes escaped, one line)."""
    return text.replace("|", "\\|").replace("\n", " ")


def print_error(console: Console, command: str, error: SixtyError) -> None:
    """``<command>: error: <file>: <problem>`` on one line, the message taken literally."""
    console.print(f"{command}: error: {error}", markup=False, highlight=False, soft_wrap=True)


def run_gate(
    results_path: Path,
    *,
    pyproject: Path,
    baseline_path: Path | None = None,
    junit_path: Path | None = None,
    markdown_path: Path | None = None,
    allow_env_mismatch: bool = False,
    console: Console,
    error_console: Console | None = None,
) -> int:
    """Judge ``results_path`` by ``pyproject``'s budgets: print the table and a summary,
    write the JUnit and Markdown reports when asked, and return the exit code. Every input
    is read and judged before anything is written; on bad input one line names the file
    and the problem (on ``error_console``, by default ``console``), nothing is written,
    and the code is :data:`EXIT_ERROR`."""
    try:
        results = results_file.read(results_path)
        baseline = results_file.read(baseline_path) if baseline_path is not None else None
        warnings = check_environment(
            results, baseline, allow_env_mismatch, against=str(baseline_path)
        )
        checks = evaluate(results, load_budgets(pyproject), baseline)
        reports: dict[Path, str] = {}
        if junit_path is not None:
            reports[junit_path] = junit_xml(checks, warnings)
        if markdown_path is not None:
            reports[markdown_path] = markdown(checks, warnings)
        write_whole(reports)
    except SixtyError as exc:
        print_error(error_console or console, "sixty gate", exc)
        return EXIT_ERROR
    console.print(table(checks, warnings))
    console.print(summary(checks), markup=False, highlight=False, soft_wrap=True)
    return exit_code(checks)
