"""The report's sections as data: each a (header, rows) table or a list of lines, computed
from ``results.json`` alone, for :mod:`.report` to render as Markdown and HTML."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sixty_core.harness.metrics import Metric, all_metrics
from sixty_core.harness.results import Results
from sixty_core.profiles import FLAGS

#: The metrics the ablation section attributes, with the part shown for percentiles.
ABLATION_METRICS = (
    "memory_peak_mb",
    "api_failure_rate",
    "deal_create_ms.p50",
    "cache_hit_rate",
    "pool_efficiency",
    "leaking_components",
    "throughput_rps",
)


# --- figures as text ------------------------------------------------------------------


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; a ``|`` inside a cell is escaped."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.2%}" if abs(value) < 0.1 else f"{value:.1%}"
    if unit in ("count", "rows"):
        return f"{value:.0f}"
    if unit == "ms":
        return f"{value:,.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "req/s":
        return f"{value:.1f} req/s"
    return f"{value:g} {unit}".strip()


def fmt_metric(metric: Metric | None) -> str:
    if metric is None or metric.value is None:
        return f"none ({metric.source})" if metric and metric.source else "not measured"
    text = fmt(metric.value, metric.unit)
    if (
        not metric.exact
        and metric.low is not None
        and metric.high is not None
        and (metric.low != metric.value or metric.high != metric.value)
    ):
        text += f" [{fmt(metric.low, metric.unit)}, {fmt(metric.high, metric.unit)}]"
    return text


# --- the sections, as (header, rows) tables --------------------------------------------


def profile_names(results: Results) -> list[str]:
    return [p.profile for p in results.profiles]


def figures_table(results: Results) -> tuple[list[str], list[list[str]]]:
    metrics = all_metrics(results)
    names = profile_names(results)
    rows: list[list[str]] = []
    keys = [
        ("memory_peak_mb", "peak RSS (VmHWM)"),
        ("memray_peak_heap_mb", "peak heap (memray, leak run)"),
        ("api_failure_rate", "API failure rate"),
        ("deal_create_ms.p50", "deal create p50"),
        ("deal_create_ms.p95", "deal create p95"),
        ("deal_create_ms.p99", "deal create p99"),
        ("cache_hit_rate", "cache hit rate"),
        ("pool_efficiency", "pool efficiency"),
        ("leaking_components", "leaking components"),
        ("throughput_rps", "throughput"),
        ("duplicates_in_db", "duplicate deals (database)"),
        ("stale_reads", "stale reads (probe, each write read back)"),
    ]
    for key, label in keys:
        rows.append([label, *(fmt_metric(metrics.get(f"{name}.{key}")) for name in names)])
    return ["metric", *names], rows


def statements_table(results: Results) -> tuple[list[str], list[list[str]]]:
    names = profile_names(results)
    endpoints: dict[str, dict[str, str]] = {}
    for record in results.profiles:
        for count in record.statements:
            size = f" ({count.response_bytes:,.0f} B)" if count.response_bytes else ""
            endpoints.setdefault(count.endpoint, {})[record.profile] = (
                f"{count.first} → {count.steady:g}{size}"
            )
    rows = [[e, *(cells.get(n, "-") for n in names)] for e, cells in endpoints.items()]
    return ["endpoint: statements first → steady (answer size)", *names], rows


def ablation_effects(results: Results) -> dict[str, dict[str, float]]:
    """Per metric, per flag: metric(optimized-no-FLAG) - metric(optimized), where both ran."""
    metrics = all_metrics(results)
    effects: dict[str, dict[str, float]] = {}
    for key in ABLATION_METRICS:
        base = metrics.get(f"optimized.{key}")
        for flag in FLAGS:
            other = metrics.get(f"optimized-no-{flag}.{key}")
            if base is None or other is None or base.value is None or other.value is None:
                continue
            effects.setdefault(key, {})[flag] = other.value - base.value
    return effects


def ablation_table(results: Results) -> tuple[list[str], list[list[str]]]:
    metrics = all_metrics(results)
    effects = ablation_effects(results)
    flags = [f for f in FLAGS if any(f in e for e in effects.values())]
    rows: list[list[str]] = []
    for key, by_flag in effects.items():
        base = metrics[f"optimized.{key}"]
        rows.append(
            [
                f"{key} (optimized {fmt(base.value, base.unit)})",
                *(
                    ("+" if by_flag[f] > 0 else "") + fmt(by_flag[f], base.unit)
                    if f in by_flag
                    else "-"
                    for f in flags
                ),
            ]
        )
    return ["metric", *(f"no {f}" for f in flags)], rows


def leak_sections(results: Results) -> list[tuple[str, list[str]]]:
    """Per profile with a leak run: a headline and one line of evidence per component."""
    sections: list[tuple[str, list[str]]] = []
    for record in results.profiles:
        leaks = record.leaks
        if leaks is None:
            continue
        head = (
            f"{record.profile}: {len(leaks.leaking_components)} leaking "
            f"component(s) over {leaks.cycles} cycles ({leaks.requests} requests)"
        )
        if leaks.heap_slope_mb_per_10k_requests is not None:
            head += f"; heap slope {leaks.heap_slope_mb_per_10k_requests:+.2f} MB / 10k requests"
        lines: list[str] = []
        shown: set[str] = set()
        for evidence in leaks.evidence:
            if evidence.component in shown:
                continue
            shown.add(evidence.component)
            where = f" at {evidence.site}" if evidence.site else ""
            lines.append(f"{evidence.component} ({evidence.rule}): {evidence.evidence}{where}")
        sections.append((head, lines))
    return sections


def _sig(value: float | None) -> str:
    """Three significant digits, thousands separated (bench figures span 1 to 10^5)."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def bench_table(results: Results) -> tuple[list[str], list[list[str]]]:
    if results.bench is None:
        return [], []
    header = ["benchmark", "side", "median µs", "CPU µs", "stmts", "allocs", "ratio [95% CI]"]
    rows = [
        [
            r.benchmark,
            r.side,
            _sig(r.median_us),
            _sig(r.cpu_us),
            _sig(r.statements),
            _sig(r.allocations),
            r.ratio,
        ]
        for r in results.bench.rows
    ]
    return header, rows


def method_lines(results: Results) -> list[str]:
    m = results.method
    s = m.scenario
    edge = s.edge
    weights = ", ".join(f"{k} {v}" for k, v in s.weights.items())
    lines = [
        f"Scenario `{s.name}` v{s.version}: {s.users} users ({weights}), spawn {s.spawn_rate:g}/s, "
        f"{s.duration_s:g} s, think {s.think_s[0]:g}-{s.think_s[1]:g} s; seed scale "
        f"{s.seed_scale}, seed {s.seed}; time_scale {s.time_scale:g}.",
        f"Edge fault profile: latency lognormal median {edge.latency_ms_median:g} ms "
        f"(sigma {edge.latency_sigma:g}), {edge.failure_rate:.0%} answered 503, "
        f"{edge.hang_probability:.0%} never answer.",
        f"Leak runs: {m.leak_cycles} cycles, {m.leak_warmup} of warm-up, under memray."
        if m.leak_cycles
        else "Leak runs: skipped.",
        f"Postgres backend `{m.db_backend}`; "
        + (
            "every profile on its own copy of one seeded template database."
            if m.template_clone
            else "profiles on separately seeded databases."
        ),
        f"{'Quick (CI) budget' if m.quick else 'Full budget'}; whole run {results.wall_s:.0f} s.",
    ]
    faults = [f"{p.profile}: {', '.join(p.test_faults)}" for p in results.profiles if p.test_faults]
    if faults:
        lines.append("Test faults switched on: " + "; ".join(faults) + ".")
    return lines


def environment_lines(results: Results) -> list[str]:
    f = results.fingerprint
    packages = ", ".join(f"{k} {v}" for k, v in sorted(f.packages.items()))
    return [
        f"CPU {f.cpu_model}, {f.cores} cores, {f.memory_gb:g} GiB; {f.system}",
        f"Python {f.python}; Postgres {f.postgres} ({f.db_backend})",
        f"commit {f.git_commit[:12]}{' (with uncommitted changes)' if f.git_dirty else ''}",
        f"packages: {packages}",
    ]
