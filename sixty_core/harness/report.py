"""``sixty report``: ``report.md`` and a self-contained ``report.html`` from ``results.json``.

Every number is computed here from the results file (:mod:`sixty_core.harness.metrics`),
nothing is carried over from the run's console. The Markdown fits a pull-request comment
(tables only); the HTML adds the plots, inlined as PNG data URIs so the page opens offline
with no other file. Both are written whole or not at all.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from sixty_core.harness import claims, plots, scaling_report
from sixty_core.harness.metrics import DEFINITIONS, all_metrics
from sixty_core.harness.report_sections import (
    ablation_effects,
    ablation_table,
    bench_table,
    environment_lines,
    figures_table,
    fmt_metric,
    leak_sections,
    md_table,
    method_lines,
    profile_names,
    statements_table,
)
from sixty_core.harness.results import Results, read
from sixty_core.harness.rundir import make_folder, write_whole
from sixty_core.harness.scaling_results import ScalingRecord
from sixty_core.reliability import table as reliability_table
from sixty_core.reliability.scorecard import ReliabilityRecord

VERDICT_MARK = {claims.CONFIRMED: "✅", claims.REFUTED: "❌", claims.INCONCLUSIVE: "❔"}


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path


def _tested(row: claims.ClaimRow) -> str:
    tested = row.tested
    if tested is None:
        return "-"
    if row.claim.metric == "leaking_components":
        return f"{tested.value:.0f}"
    if row.claim.is_reduction:
        if tested.value < 0:
            return f"rose {-tested.value:.0%}" + (
                f" [{-tested.high:.0%}, {-tested.low:.0%}]" if tested.low != tested.high else ""
            )
        text = f"fell {tested.value:.0%}"
        if tested.low != tested.high:
            text += f" [{tested.low:.0%}, {tested.high:.0%}]"
        return text
    return fmt_metric(row.after)


def _before_note(row: claims.ClaimRow) -> str:
    if row.before_matches is None:
        return "not measured"
    return "matches" if row.before_matches else "does not match"


def claim_rows(results: Results) -> list[claims.ClaimRow]:
    return claims.evaluate(all_metrics(results))


CLAIM_HEADER = (
    "claim",
    "claimed before → after",
    "measured before (legacy)",
    "measured after (optimized)",
    "tested",
    "verdict",
)


def _claim_cells(row: claims.ClaimRow, *, marks: bool = True) -> list[str]:
    c = row.claim
    verdict = f"{VERDICT_MARK[row.verdict]} {row.verdict}" if marks else row.verdict
    return [
        f"{c.label}: {c.claimed_effect}",
        f"{c.claimed_before} → {c.claimed_after}",
        f"{fmt_metric(row.before)} (claimed before {_before_note(row)})",
        fmt_metric(row.after),
        f"{c.test}: {_tested(row)}",
        verdict,
    ]


def claims_table(path: Path) -> Table:
    """The claims table for a terminal: claimed, measured, verdict (the rule is in the
    report)."""
    table = Table(title="The seed report's claims, measured")
    for column in ("claim", "claimed", "legacy", "optimized", "tested", "verdict"):
        table.add_column(column)
    style = {claims.CONFIRMED: "green", claims.REFUTED: "red", claims.INCONCLUSIVE: "yellow"}
    for row in claim_rows(read(path)):
        c = row.claim
        table.add_row(
            c.label,
            f"{c.claimed_before} -> {c.claimed_after} ({c.claimed_effect})",
            fmt_metric(row.before),
            fmt_metric(row.after),
            _tested(row),
            f"[{style[row.verdict]}]{row.verdict}[/]",
        )
    return table


# --- Markdown ----------------------------------------------------------------------------


def markdown(results: Results) -> str:
    rows = claim_rows(results)
    tally = {v: sum(1 for r in rows if r.verdict == v) for v in VERDICT_MARK}
    parts = [
        "# sixty: the seed report's claims, measured",
        "",
        f"Run of {results.created_at}, commit `{results.fingerprint.git_commit[:12]}`, "
        f"profiles {', '.join(profile_names(results))}. "
        f"{tally[claims.CONFIRMED]} confirmed, {tally[claims.REFUTED]} refuted, "
        f"{tally[claims.INCONCLUSIVE]} inconclusive.",
        "",
        md_table(CLAIM_HEADER, [_claim_cells(r) for r in rows]),
        "",
        f"*Rule:* {claims.RULE} Brackets are 95% intervals.",
        "",
        "## Measured figures",
        "",
        md_table(*figures_table(results)),
        "",
        "## Statements per request (probe: one request at a time)",
        "",
        md_table(*statements_table(results)),
    ]
    if ablation_effects(results):
        parts += [
            "",
            "## Ablations: each flag turned off alone",
            "",
            md_table(*ablation_table(results)),
        ]
    leaks = leak_sections(results)
    if leaks:
        parts += ["", "## Leak evidence", ""]
        for head, lines in leaks:
            parts += [f"- **{head}**", *(f"  - {line}" for line in lines)]
    if results.scaling is not None:
        parts += ["", "## How cost grows", ""]
        for table in _scaling_tables(results.scaling):
            parts += [md_table(*table), ""]
        parts += [f"- {line}" for line in scaling_report.sweep_lines(results.scaling)]
    if results.reliability is not None:
        parts += ["", "## Reliability scorecard", ""]
        parts += [md_table(*reliability_table.scorecard_table(results.reliability)), ""]
        parts += [f"- {line}" for line in _reliability_findings(results.reliability)]
    header, bench_rows = bench_table(results)
    if bench_rows:
        parts += ["", "## Benchmarks (per call)", "", md_table(header, bench_rows)]
    parts += ["", "## Method", "", *(f"- {line}" for line in method_lines(results))]
    parts += ["", "Definitions:", ""]
    parts += [f"- `{k}`: {v}" for k, v in DEFINITIONS.items()]
    parts += ["", "## Environment", "", *(f"- {line}" for line in environment_lines(results))]
    parts += ["", "Plots: see `report.html` beside this file.", ""]
    return "\n".join(parts)


# --- HTML ----------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#1b1f24;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.confirmed{background:#dafbe1}td.refuted{background:#ffebe9}td.inconclusive{background:#fff8c5}
img{max-width:100%;border:1px solid #d0d7de;margin:.5em 0}
.note{color:#57606a;font-size:.9em}code{background:#f6f8fa;padding:0 .2em}
"""


#: Records on <body> how many plots the browser decoded, so a headless check (and a
#: reader's devtools) can tell a page with broken images from a whole one.
SELF_CHECK = (
    "addEventListener('load',()=>{const i=[...document.images];"
    "document.body.dataset.imagesTotal=i.length;"
    "document.body.dataset.imagesDecoded=i.filter(x=>x.complete&&x.naturalWidth>0).length;});"
)


def _html_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    out = ["<table><thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for index, row in enumerate(rows):
        cls = classes[index] if index < len(classes) else ""
        out.append("<tr>")
        for column, cell in enumerate(row):
            attr = f' class="{cls}"' if cls and column == len(row) - 1 else ""
            out.append(f"<td{attr}>{html.escape(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _list(lines: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def html_report(results: Results) -> str:
    rows = claim_rows(results)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>sixty report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>sixty: the seed report's claims, measured</h1>",
        f"<p class='note'>Run of {html.escape(results.created_at)}, commit "
        f"<code>{html.escape(results.fingerprint.git_commit[:12])}</code>, profiles "
        f"{html.escape(', '.join(profile_names(results)))}.</p>",
        "<h2 id='claims'>Claims</h2>",
        _html_table(
            CLAIM_HEADER, [_claim_cells(r, marks=False) for r in rows], [r.verdict for r in rows]
        ),
        f"<p class='note'>Rule: {html.escape(claims.RULE)} Brackets are 95% intervals.</p>",
        "<h2>Measured figures</h2>",
        _html_table(*figures_table(results)),
        "<h2>Latency</h2>",
        _img(plots.latency_cdfs(results), "latency CDFs per profile"),
        "<h2>Memory over time</h2>",
        _img(plots.rss_over_time(results), "service RSS over time"),
        "<h2>Cache and pool over time</h2>",
        _img(plots.cache_and_pool(results), "cache hit rate and pool busy/open over time"),
        "<h2>Throughput over time</h2>",
        _img(plots.throughput(results), "throughput over time"),
        "<h2>Statements per request</h2>",
        _html_table(*statements_table(results)),
    ]
    effects = ablation_effects(results)
    if effects:
        units = {k: all_metrics(results)[f"optimized.{k}"].unit for k in effects}
        parts += [
            "<h2>Ablations</h2>",
            _html_table(*ablation_table(results)),
            _img(plots.ablation_bars(effects, units), "ablation attribution bars"),
        ]
    leaks = leak_sections(results)
    if leaks:
        parts.append("<h2>Leak evidence</h2>")
        parts += [f"<p><b>{html.escape(head)}</b></p>{_list(lines)}" for head, lines in leaks]
    if results.scaling is not None:
        parts += _scaling_html(results.scaling)
    if results.reliability is not None:
        parts += [
            "<h2>Reliability scorecard</h2>",
            _html_table(*reliability_table.scorecard_table(results.reliability)),
            _html_table(*reliability_table.scenario_table(results.reliability)),
            _list(_reliability_findings(results.reliability)),
        ]
    header, bench_rows = bench_table(results)
    if bench_rows:
        parts += ["<h2>Benchmarks (per call)</h2>", _html_table(header, bench_rows)]
    parts += [
        "<h2>Method</h2>",
        _list(method_lines(results)),
        _list(f"{k}: {v}" for k, v in DEFINITIONS.items()),
        "<h2>Environment</h2>",
        _list(environment_lines(results)),
        f"<script>{SELF_CHECK}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _reliability_findings(record: ReliabilityRecord) -> list[str]:
    """One line per failed scenario and profile: what broke (legacy's are the findings the
    original's design predicts; an optimized one is a regression)."""
    return [
        f"{o.profile} {o.scenario} ({o.title}): {'; '.join(o.findings)}"
        for o in record.outcomes
        if not o.passed
    ] or ["every scenario passed on every profile"]


def _scaling_tables(record: ScalingRecord) -> list[tuple[list[str], list[list[str]]]]:
    tables = [scaling_report.exponent_table(record), scaling_report.sweep_table(record)]
    return [table for table in tables if table[1]]


def _scaling_html(record: ScalingRecord) -> list[str]:
    parts = ["<h2>How cost grows</h2>"]
    if record.curves:
        parts += [
            _html_table(*scaling_report.exponent_table(record)),
            _img(scaling_report.growth_png(record), "latency, statements and memory against deals"),
        ]
    if record.sweeps:
        parts += [
            _html_table(*scaling_report.sweep_table(record)),
            _list(scaling_report.sweep_lines(record)),
            _img(scaling_report.sweep_png(record), "throughput and p99 against users"),
        ]
    parts.append(_list(scaling_report.method_lines(record)))
    return parts


def render(results_path: Path, out: Path) -> ReportPaths:
    """Write ``out/report.md`` and ``out/report.html`` from ``results_path``; both are
    built in memory first, so a failure leaves no half report."""
    results = read(results_path)
    md = markdown(results)
    page = html_report(results)
    make_folder(out)
    paths = ReportPaths(out / "report.md", out / "report.html")
    write_whole({paths.markdown: md, paths.html: page})
    return paths
