"""The benchmark table, computed from pytest-benchmark's JSON and nothing else.

One row per benchmark side: median time per call with its interquartile range, CPU time per
call, statements and allocations per call, the other counters, and — on the row of each
ratio's denominator — the ratio (numerator's time over this side's) with its 95% interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from sixty_core.errors import SixtyError


class BenchResultsError(SixtyError):
    """A bench.json that is missing, unreadable or not pytest-benchmark's output."""


@dataclass(frozen=True)
class Row:
    benchmark: str
    side: str
    median_us: float | None
    iqr_us: float | None
    cpu_us: float | None
    statements: float | None
    allocations: float | None
    other: str
    ratio: str


def load(path: Path) -> dict[str, Any]:
    """Read ``path``; BenchResultsError naming the file and the problem otherwise."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchResultsError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchResultsError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise BenchResultsError(f"{path}: not pytest-benchmark JSON (no 'benchmarks' list)")
    return data


def _name(bench: dict[str, Any]) -> str:
    name = str(bench.get("name", "?"))
    return name.removeprefix("test_")


def _others(counters: dict[str, Any]) -> str:
    shown = {k: v for k, v in counters.items() if k not in ("statements", "allocations") and v != 0}
    return ", ".join(f"{k.split('.')[-1]}={v:g}" for k, v in sorted(shown.items()))


def _ratio_text(ratio: dict[str, Any]) -> str:
    value = ratio.get("ratio")
    if value is None:
        return ""
    text = f"{ratio['numerator']}/{ratio['denominator']} {value:.2f}x"
    if ratio.get("low") is not None and ratio.get("high") is not None:
        text += f" [{ratio['low']:.2f}, {ratio['high']:.2f}]"
    return text


def rows(data: dict[str, Any]) -> list[Row]:
    """The table's rows, in the JSON's order."""
    table: list[Row] = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") or {}
        name = _name(bench)
        if info.get("kind") == "interleaved":
            ratios_by_side: dict[str, list[str]] = {}
            for ratio in info.get("ratios", []):
                ratios_by_side.setdefault(ratio["denominator"], []).append(_ratio_text(ratio))
            for side, figures in info.get("sides", {}).items():
                counters = figures.get("counters", {})
                table.append(
                    Row(
                        name,
                        side,
                        figures.get("median_us"),
                        figures.get("iqr_us"),
                        figures.get("cpu_us_per_call"),
                        counters.get("statements"),
                        counters.get("allocations"),
                        _others(counters),
                        "; ".join(ratios_by_side.get(side, [])),
                    )
                )
                name = ""
            continue
        stats = bench.get("stats") or {}
        counters = info.get("counters", {})
        median = stats.get("median")
        iqr = stats.get("iqr")
        table.append(
            Row(
                name,
                "",
                median * 1e6 if median is not None else None,
                iqr * 1e6 if iqr is not None else None,
                info.get("cpu_us_per_call"),
                counters.get("statements"),
                counters.get("allocations"),
                _others(counters),
                "",
            )
        )
    return table


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _cells(row: Row) -> list[str]:
    return [
        row.benchmark,
        row.side,
        _num(row.median_us, 2 if (row.median_us or 0) < 10 else 1),
        _num(row.iqr_us, 2 if (row.iqr_us or 0) < 10 else 1),
        _num(row.cpu_us),
        _num(row.statements, 0) if row.statements is not None else "-",
        _num(row.allocations, 0),
        row.ratio,
        row.other,
    ]


HEADERS = [
    "benchmark",
    "side",
    "median µs",
    "IQR µs",
    "CPU µs",
    "stmts",
    "allocs",
    "ratio (time/time, 95% CI)",
    "other counters per call",
]


def rich_table(data: dict[str, Any], title: str = "sixty bench") -> Table:
    """The terminal table: a title row per benchmark, then one row per side; a ratio sits
    on its denominator's row (``legacy/this 22.77x`` = legacy takes 22.77 times as long).
    The other counters are in the Markdown table and the JSON."""
    table = Table(title=title, show_edge=False, header_style="bold")
    table.add_column("benchmark / side")
    for header in ("median µs", "± IQR", "CPU µs", "stmts", "allocs"):
        table.add_column(header, justify="right")
    table.add_column("ratio [95% CI]")
    for row in rows(data):
        cells = _cells(row)
        if row.benchmark:
            if table.row_count:
                table.add_section()
            if row.side:
                table.add_row(Text(row.benchmark, style="bold"))
        label = f"  {row.side}" if row.side else row.benchmark
        ratio = row.ratio.replace(f"/{row.side} ", "/this ") if row.side else row.ratio
        # Names such as cached_endpoint[/api/stages] are not markup.
        table.add_row(Text(label), *(Text(c) for c in cells[2:7]), Text(ratio))
    return table


def markdown(data: dict[str, Any]) -> str:
    """The table as GitHub Markdown (for the README and pull-request comments)."""
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---:" if 2 <= i <= 6 else "---" for i in range(len(HEADERS))) + "|",
    ]
    for row in rows(data):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    return "\n".join(lines) + "\n"
