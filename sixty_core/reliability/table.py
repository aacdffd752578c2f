"""The scorecard and the findings as tables: for the terminal and for ``reliability.md``."""

from __future__ import annotations

from collections.abc import Callable

from sixty_core.reliability.scorecard import ReliabilityRecord, Scorecard

#: Scorecard rows: label, how to show a profile's figure, and the optimized target.
ROWS: tuple[tuple[str, Callable[[Scorecard], str], str], ...] = (
    ("scenarios passed", lambda s: f"{s.scenarios_passed} / {s.scenarios_run}", "all"),
    ("faults survived (P, E)", lambda s: f"{s.faults_survived} / {s.faults_attempted}", "100%"),
    ("deadline overshoot, max", lambda s: _num(s.deadline_overshoot_ms, "ms"), "0 ms"),
    ("leaked connections", lambda s: str(s.leaked_connections), "0"),
    ("leaked tasks / fds", lambda s: f"{s.leaked_tasks} / {s.leaked_fds}", "0 / 0"),
    ("recovery after a fault, max", lambda s: _num(s.recovery_s, "s", 1), "<= 5 s"),
    (
        "rows lost / duplicated",
        lambda s: f"{_num(s.rows_lost)} / {_num(s.rows_duplicated)}",
        "0 / 0",
    ),
    ("stale reads", lambda s: _num(s.stale_reads), "0"),
    ("loader calls per cold key", lambda s: _num(s.loader_calls_per_key), "1"),
    (
        "cross-tenant accesses / cases",
        lambda s: f"{_num(s.cross_tenant_accesses)} / {_num(s.cross_tenant_cases)}",
        "0 / all",
    ),
    ("bad inputs tried", lambda s: _num(s.bad_inputs), "recorded"),
    ("raw 5xx answers", lambda s: str(s.raw_server_errors), "0"),
    (
        "SQL built from values (call sites)",
        lambda s: f"{_num(s.injection_findings)} ({_num(s.sql_call_sites)})",
        "0",
    ),
)


def _num(value: float | int | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return f"{text} {unit}".strip()


def scorecard_table(record: ReliabilityRecord) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per figure, one column per profile, then the target."""
    cards = {card.profile: card for card in record.scorecards}
    header = ["figure", *record.profiles, "target (optimized)"]
    rows = [
        [label, *(show(cards[p]) for p in record.profiles), target] for label, show, target in ROWS
    ]
    return header, rows


def scenario_table(record: ReliabilityRecord) -> tuple[list[str], list[list[str]]]:
    """One row per scenario: its id and title, then pass or its first finding per profile."""
    header = ["scenario", *record.profiles]
    rows: list[list[str]] = []
    seen: dict[str, str] = {}
    for outcome in record.outcomes:
        seen.setdefault(outcome.scenario, outcome.title)
    for scenario, title in seen.items():
        row = [f"{scenario} {title}"]
        for profile in record.profiles:
            found = next(
                (o for o in record.outcomes if o.scenario == scenario and o.profile == profile),
                None,
            )
            if found is None:
                row.append("-")
            elif found.passed:
                row.append(f"pass ({found.seconds:.1f} s)")
            else:
                more = f" (+{len(found.findings) - 1} more)" if len(found.findings) > 1 else ""
                row.append(f"FAIL: {found.findings[0]}{more}")
        rows.append(row)
    return header, rows


def markdown(record: ReliabilityRecord) -> str:
    """``reliability.md``: the scorecard, the scenarios, then every finding per profile."""
    from sixty_core.harness.report_sections import md_table

    lines = [
        "# Reliability scorecard",
        "",
        f"{record.created_at}; profiles {', '.join(record.profiles)}; "
        f"{'quick subset' if record.quick else 'every scenario'}; {record.wall_s:.0f} s.",
        "",
        md_table(*scorecard_table(record)),
        "",
        "## Scenarios",
        "",
        md_table(*scenario_table(record)),
        "",
        "## Findings",
        "",
    ]
    for profile in record.profiles:
        failed = [o for o in record.outcomes_of(profile) if not o.passed]
        lines.append(f"### {profile}: {len(failed)} scenario(s) failed")
        lines.append("")
        for outcome in failed:
            for finding in outcome.findings:
                lines.append(f"- **{outcome.scenario}** {finding}")
        if not failed:
            lines.append("- none")
        lines.append("")
    if record.sql_findings:
        lines += ["### SQL built from values", "", *(f"- {f}" for f in record.sql_findings), ""]
    return "\n".join(lines)
