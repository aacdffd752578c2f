"""Tables and plots of a :class:`~sixty_core.harness.scaling_results.ScalingRecord`: the
growth exponents, the load sweep, log-log curves against deal count and a throughput/p99
curve against users. Used by ``sixty scale`` (``scale.md``, PNGs beside it) and by the
run report when ``results.json`` carries the sweeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on CI machines; must precede pyplot
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, NullFormatter

from sixty_core.harness.plots import legend, png, profile_colour
from sixty_core.harness.report_sections import md_table
from sixty_core.harness.scaling_results import CURVE_METRICS, GrowthCurve, ScalingRecord

#: The curves a reader looks at first: the first-page list (the seed story), one deal,
#: the pipeline sums, and the service's peak memory.
HEADLINE: tuple[tuple[str, str | None], ...] = (
    ("p50_ms", "GET /api/deals"),
    ("p99_ms", "GET /api/deals"),
    ("statements", "GET /api/deals"),
    ("response_bytes", "GET /api/deals"),
    ("p50_ms", "GET /api/deals/{id}"),
    ("p50_ms", "GET /api/deals/pipeline-stats"),
    ("peak_rss_mb", None),
)
EXPONENT_HEADER = ("profile", "metric", "endpoint", "exponent [95%]", "growth", "by deals")
SWEEP_HEADER = ("profile", "users", "ok req/s", "all req/s", "p50 ms", "p99 ms [95%]", "failures")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def exponent_cell(curve: GrowthCurve) -> str:
    if curve.exponent is None:
        return "none (a zero among the values)"
    if curve.low is None or curve.high is None or curve.low == curve.high:
        return f"{curve.exponent:+.2f}"
    return f"{curve.exponent:+.2f} [{curve.low:+.2f}, {curve.high:+.2f}]"


def _curve_row(curve: GrowthCurve) -> list[str]:
    by_deals = ", ".join(f"{p.deals:,}: {_num(p.value)}" for p in curve.points)
    return [
        curve.profile,
        f"{curve.metric} ({curve.unit})",
        curve.endpoint or "whole service",
        exponent_cell(curve),
        curve.growth,
        by_deals,
    ]


def headline_curves(record: ScalingRecord) -> list[GrowthCurve]:
    found = []
    for profile in record.profiles:
        for metric, endpoint in HEADLINE:
            curve = record.curve(profile, metric, endpoint)
            if curve is not None:
                found.append(curve)
    return found


def exponent_table(
    record: ScalingRecord, *, everything: bool = False
) -> tuple[list[str], list[list[str]]]:
    """The fitted exponents: the headline curves, or with ``everything`` every curve."""
    curves = record.curves if everything else headline_curves(record)
    return list(EXPONENT_HEADER), [_curve_row(c) for c in curves]


def sweep_table(record: ScalingRecord) -> tuple[list[str], list[list[str]]]:
    rows = []
    for sweep in record.sweeps:
        for step in sweep.steps:
            p99 = (
                f"{_num(step.p99_ms)} [{_num(step.p99_low)}, {_num(step.p99_high)}]"
                if step.p99_ms is not None
                else "-"
            )
            mark = " (saturates)" if step.users == sweep.saturation_users else ""
            rows.append(
                [
                    sweep.profile,
                    f"{step.users}{mark}",
                    f"{step.ok_rps:.1f}",
                    f"{step.rps:.1f}",
                    _num(step.p50_ms),
                    p99,
                    f"{step.failures} of {step.requests}",
                ]
            )
    return list(SWEEP_HEADER), rows


def sweep_lines(record: ScalingRecord) -> list[str]:
    """One sentence per profile: saturation point and best throughput within budget."""
    lines = []
    for sweep in record.sweeps:
        saturation = (
            f"saturates after {sweep.saturation_users} users"
            if sweep.saturation_users is not None
            else f"no saturation up to {sweep.steps[-1].users} users"
        )
        best = (
            f"{sweep.best_rps_within_budget:.1f} successful req/s at "
            f"{sweep.best_users_within_budget} users"
            if sweep.best_rps_within_budget is not None
            else "no step"
        )
        lines.append(
            f"{sweep.profile}: {saturation}; best throughput with p99 within "
            f"{sweep.p99_budget_ms:g} ms: {best} (scale {sweep.scale}, steps of "
            f"{sweep.step_s:g} s, first {sweep.settle_s:.1f} s of each dropped)"
        )
    return lines


def method_lines(record: ScalingRecord) -> list[str]:
    scenario = record.scenario
    return [
        f"data sweep: scales {', '.join(map(str, record.scales))}; at each, the "
        f"{scenario.name} scenario (v{scenario.version}, {scenario.users} users) for "
        f"{scenario.duration_s:g} s per profile, each on a fresh clone of that scale's "
        "template, then the statement probe (statements of a cold request)",
        "exponent: least-squares slope of log metric over log deal count; 95% interval "
        "from a bootstrap of the raw latencies, else from the fit's residuals (Student t)",
        "names: flat |k| < 0.1, sublinear < 0.9, linear up to 1.1, worse than linear above",
        f"load: {record.where.load}; service: {record.where.service}; "
        f"database: {record.where.database}",
        f"wall time {record.wall_s:.0f} s",
    ]


def _profile_index(record: ScalingRecord, profile: str) -> int:
    return record.profiles.index(profile) if profile in record.profiles else 0


def _loglog(ax: Axes, record: ScalingRecord, metric: str, endpoint: str | None) -> None:
    for profile in record.profiles:
        curve = record.curve(profile, metric, endpoint)
        if curve is None:
            continue
        xs = [p.deals for p in curve.points if p.value]
        ys = [p.value for p in curve.points if p.value]
        if not xs:
            continue
        label = f"{profile} (k={curve.exponent:+.2f})" if curve.exponent is not None else profile
        ax.plot(
            xs, ys, marker="o", color=profile_colour(_profile_index(record, profile)), label=label
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Plain numbers at the measured sizes, not 10^x with crowded minor labels.
    ax.set_xticks(sorted({p.deals for c in record.curves for p in c.points}))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("deals (log)")
    ax.set_ylabel(CURVE_METRICS[metric] + " (log)")
    ax.set_title(f"{metric} — {endpoint or 'service'}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    legend(ax, fontsize=8)


def growth_png(record: ScalingRecord) -> bytes:
    """Log-log curves against deal count: list p50 and p99, list statements, peak RSS."""
    panels: Sequence[tuple[str, str | None]] = (
        ("p50_ms", "GET /api/deals"),
        ("p99_ms", "GET /api/deals"),
        ("statements", "GET /api/deals"),
        ("peak_rss_mb", None),
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(14, 3.8))
    for ax, (metric, endpoint) in zip(axes, panels, strict=True):
        _loglog(ax, record, metric, endpoint)
    return png(figure)


def sweep_png(record: ScalingRecord) -> bytes:
    """Throughput and p99 against users, one line per profile, saturation marked."""
    figure, (rate, tail) = plt.subplots(1, 2, figsize=(11, 3.8))
    for sweep in record.sweeps:
        colour = profile_colour(_profile_index(record, sweep.profile))
        users = [s.users for s in sweep.steps]
        rate.plot(
            users, [s.ok_rps for s in sweep.steps], marker="o", color=colour, label=sweep.profile
        )
        tail.plot(
            users,
            [s.p99_ms if s.p99_ms is not None else float("nan") for s in sweep.steps],
            marker="o",
            color=colour,
            label=sweep.profile,
        )
        if sweep.saturation_users is not None:
            for ax in (rate, tail):
                ax.axvline(sweep.saturation_users, color=colour, linestyle=":", alpha=0.7)
        tail.axhline(sweep.p99_budget_ms, color="grey", linestyle="--", linewidth=0.8)
    rate.set_ylabel("successful req/s (settled window)")
    tail.set_ylabel("p99 ms (log)")
    tail.set_yscale("log")
    tail.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    for ax in (rate, tail):
        ax.set_xticks(sorted({s.users for sweep in record.sweeps for s in sweep.steps}))
        ax.set_xlabel("users")
        ax.grid(True, alpha=0.3)
        legend(ax, fontsize=8)
    return png(figure)


def markdown(record: ScalingRecord, *, images: bool = True) -> str:
    """``scale.md``: exponents (headline, then every curve), the load sweep, the method;
    with ``images``, links to ``growth.png`` and ``load-sweep.png`` beside it."""
    parts = [
        "# sixty scale: how cost grows",
        "",
        f"Sweep of {record.created_at}: profiles {', '.join(record.profiles)}, "
        f"scales {', '.join(map(str, record.scales))}.",
    ]
    if record.curves:
        parts += [
            "",
            "## Growth over deal count (headline)",
            "",
            md_table(*exponent_table(record)),
        ]
        if images:
            parts += ["", "![growth curves, log-log](growth.png)"]
    if record.sweeps:
        parts += ["", "## Load sweep", "", md_table(*sweep_table(record)), ""]
        parts += [f"- {line}" for line in sweep_lines(record)]
        if images:
            parts += ["", "![throughput and p99 against users](load-sweep.png)"]
    if record.curves:
        parts += [
            "",
            "## Every curve",
            "",
            md_table(*exponent_table(record, everything=True)),
        ]
    parts += ["", "## Method", "", *(f"- {line}" for line in method_lines(record)), ""]
    return "\n".join(parts)


def outputs(record: ScalingRecord) -> dict[str, str | bytes]:
    """The files ``sixty scale`` writes beside ``scale.json``, by name."""
    files: dict[str, str | bytes] = {"scale.md": markdown(record)}
    if record.curves:
        files["growth.png"] = growth_png(record)
    if record.sweeps:
        files["load-sweep.png"] = sweep_png(record)
    return files
