"""The report's plots, drawn with matplotlib (Agg, no display) from ``results.json`` only.

Each function takes the results and returns one PNG as bytes (the HTML report inlines
them as data URIs, so the page opens offline). One colour per profile across every plot.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on CI machines; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sixty_core.harness.results import ProfileRecord, Results

DPI = 110
#: Seconds per point of the rate plots (hit rate, throughput): one Locust think cycle.
RATE_WINDOW_S = 2.0


def profile_colour(index: int) -> str:
    """The colour cycle's ``index``-th colour (matplotlib's ``C0``..``C9``)."""
    return f"C{index % 10}"


def legend(ax: Axes, **options: Any) -> None:
    """A legend when the axes drew anything (a profile without data draws nothing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def _loaded(results: Results) -> list[tuple[int, ProfileRecord]]:
    return [(i, p) for i, p in enumerate(results.profiles) if p.load is not None]


def _cdf(ax: Axes, values: Sequence[float], label: str, colour: str) -> None:
    if not values:
        return
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    share = np.arange(1, len(ordered) + 1) / len(ordered)
    ax.step(ordered, share, where="post", label=f"{label} (n={len(ordered)})", color=colour)


def latency_cdfs(results: Results) -> bytes:
    """Empirical CDFs of every request's latency and of the wizard create, per profile."""
    figure, (requests, creates) = plt.subplots(1, 2, figsize=(11, 4))
    for index, record in _loaded(results):
        assert record.load is not None
        colour = profile_colour(index)
        _cdf(requests, record.load.raw.ms, record.profile, colour)
        _cdf(creates, record.load.raw.creates_ms, record.profile, colour)
    for ax, title in ((requests, "every request"), (creates, "deal create (wizard action)")):
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("share of samples at or below")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        legend(ax, loc="lower right", fontsize=8)
    return png(figure)


def rss_over_time(results: Results) -> bytes:
    figure, ax = plt.subplots(figsize=(11, 3.6))
    for index, record in _loaded(results):
        assert record.load is not None
        series = record.load.series
        # zip stops at the shorter column: a series missing a quantity plots nothing.
        points = [(t, r) for t, r in zip(series.t_s, series.rss_mb, strict=False) if r is not None]
        if points:
            ax.plot(*zip(*points, strict=True), label=record.profile, color=profile_colour(index))
    ax.set_xlabel("seconds into the load run")
    ax.set_ylabel("service RSS (MB)")
    ax.set_title("Service RSS over the load run")
    ax.grid(True, alpha=0.3)
    legend(ax, fontsize=8)
    return png(figure)


def _windowed_rate(
    t: Sequence[float], numerator: Sequence[float], denominator: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Δnumerator/Δdenominator between samples about ``RATE_WINDOW_S`` apart."""
    xs: list[float] = []
    ys: list[float] = []
    start = 0
    for end in range(1, len(t)):
        if t[end] - t[start] < RATE_WINDOW_S and end != len(t) - 1:
            continue
        below = denominator[end] - denominator[start]
        if below > 0:
            xs.append(t[end])
            ys.append((numerator[end] - numerator[start]) / below)
        start = end
    return xs, ys


def cache_and_pool(results: Results) -> bytes:
    """Cache hit rate per window, and pool busy against pool size, over the load run."""
    figure, (hits, pool) = plt.subplots(1, 2, figsize=(11, 3.6))
    for index, record in _loaded(results):
        assert record.load is not None
        series = record.load.series
        colour = profile_colour(index)
        n = min(len(series.t_s), len(series.cache_hits), len(series.cache_misses))
        lookups = [series.cache_hits[i] + series.cache_misses[i] for i in range(n)]
        xs, ys = _windowed_rate(series.t_s[:n], series.cache_hits[:n], lookups)
        if xs:
            hits.plot(xs, ys, label=record.profile, color=colour)
        n = min(len(series.t_s), len(series.pool_busy), len(series.pool_size))
        if n:
            pool.plot(
                series.t_s[:n], series.pool_busy[:n], label=f"{record.profile} busy", color=colour
            )
            pool.plot(
                series.t_s[:n],
                series.pool_size[:n],
                label=f"{record.profile} open",
                color=colour,
                linestyle="--",
                alpha=0.6,
            )
    hits.set_ylim(0, 1.02)
    hits.set_title(f"Cache hit rate ({RATE_WINDOW_S:.0f} s windows)")
    pool.set_title("Pool connections: busy (solid) and open (dashed)")
    for ax in (hits, pool):
        ax.set_xlabel("seconds into the load run")
        ax.grid(True, alpha=0.3)
        legend(ax, fontsize=8)
    return png(figure)


def throughput(results: Results) -> bytes:
    """Requests started per second, from the raw samples."""
    figure, ax = plt.subplots(figsize=(11, 3.4))
    for index, record in _loaded(results):
        assert record.load is not None
        starts = np.asarray(record.load.raw.t_s, dtype=np.float64)
        if not len(starts):
            continue
        edges = np.arange(0.0, float(starts.max()) + RATE_WINDOW_S, RATE_WINDOW_S)
        counts, _ = np.histogram(starts, bins=edges)
        ax.plot(
            edges[1:], counts / RATE_WINDOW_S, label=record.profile, color=profile_colour(index)
        )
    ax.set_xlabel("seconds into the load run")
    ax.set_ylabel("requests / s")
    ax.set_title("Throughput (each profile's own client mix)")
    ax.grid(True, alpha=0.3)
    legend(ax, fontsize=8)
    return png(figure)


def ablation_bars(effects: dict[str, dict[str, float]], units: dict[str, str]) -> bytes:
    """Per metric, each flag's effect: metric(optimized-no-FLAG) - metric(optimized)."""
    metrics = list(effects)
    columns = min(3, len(metrics)) or 1
    rows = (len(metrics) + columns - 1) // columns or 1
    figure, axes = plt.subplots(rows, columns, figsize=(11, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        flags = list(effects[metric])
        values = [effects[metric][f] for f in flags]
        ax.barh(flags, values, color=[profile_colour(i) for i in range(len(flags))])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{metric} ({units.get(metric, '')})", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    figure.suptitle("Turning one flag off: change from optimized", fontsize=10)
    return png(figure)
