"""``sixty compare A B``: every shared metric side by side, a conservative ratio, and a
"changed" mark only where the intervals part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sixty_core.harness.compare import (
    Comparison,
    compare,
    compare_metrics,
    markdown,
    run_compare,
)
from sixty_core.harness.gate import EXIT_ERROR, EXIT_PASS
from sixty_core.harness.metrics import Metric
from sixty_core.harness.results import write
from tests.results_support import build_results, console, creates, fingerprint, profile


def row(rows: list[Comparison], key: str) -> Comparison:
    (found,) = [r for r in rows if r.key == key]
    return found


def measured(value: float | None, low: float, high: float) -> Metric:
    """A noisy figure in ms, lower being better (unmeasured when ``value`` is None)."""
    if value is None:
        return Metric("optimized.x", None, None, None, "ms", False, True, "test")
    return Metric("optimized.x", value, low, high, "ms", False, True, "test")


def test_a_a_changes_nothing() -> None:
    """The same results twice: every ratio is 1 and nothing is marked."""
    run = build_results()
    rows = compare(run, run)
    assert rows and not any(r.changed for r in rows)
    ratios = [r.ratio for r in rows if r.ratio is not None]
    assert ratios and all(ratio == pytest.approx(1.0) for ratio in ratios)


def test_only_metrics_present_in_both_are_compared() -> None:
    """A profile that only A ran has no rows; a new endpoint in B has none either."""
    a = build_results(profile("legacy"), profile())
    b = build_results(profile(statements={"/api/stages": 1.0, "/api/new": 2.0}))
    keys = {r.key for r in compare(a, b)}
    assert not any(key.startswith("legacy.") for key in keys)
    assert "optimized.statements./api/stages" in keys
    assert "optimized.statements./api/new" not in keys
    assert "optimized.statements./api/deals" not in keys


def test_an_extra_statement_is_a_change_for_the_worse() -> None:
    """Counters compare exactly: 1 -> 2 statements is changed, ratio exactly 2."""
    a = build_results()
    b = build_results(profile(statements={"/api/stages": 2.0, "/api/deals": 3.0}))
    rows = compare(a, b)
    stages = row(rows, "optimized.statements./api/stages")
    assert stages.changed and stages.mark == "changed (worse)"
    assert (stages.ratio, stages.ratio_low, stages.ratio_high) == (2.0, 2.0, 2.0)
    assert not row(rows, "optimized.statements./api/deals").changed


def test_overlapping_intervals_are_not_a_change() -> None:
    """A 2% shift in create times stays inside the bootstrap intervals."""
    a = build_results()
    b = build_results(profile(creates_ms=creates(median=122.4)))
    assert not row(compare(a, b), "optimized.deal_create_ms.p50").changed


def test_parted_intervals_are_a_change_with_a_conservative_ratio() -> None:
    """Creates twice as slow: changed, and the ratio's interval is B.low/A.high ..
    B.high/A.low, which holds the point ratio."""
    a = build_results()
    b = build_results(profile(creates_ms=creates(median=240.0)))
    p50 = row(compare(a, b), "optimized.deal_create_ms.p50")
    assert p50.changed and p50.mark == "changed (worse)"
    a_low, a_high, b_low, b_high = p50.a.low, p50.a.high, p50.b.low, p50.b.high
    assert a_low and a_high and b_low and b_high
    assert a_high < b_low
    assert p50.ratio_low == pytest.approx(b_low / a_high)
    assert p50.ratio_high == pytest.approx(b_high / a_low)
    assert p50.ratio == pytest.approx(2.0)
    assert p50.ratio_low is not None and p50.ratio_high is not None
    assert p50.ratio_low < 2.0 < p50.ratio_high


def test_a_higher_is_better_metric_falling_is_worse() -> None:
    """The cache hit rate going from 90% to 50% is a change for the worse."""
    b = build_results(profile(hits=500.0, misses=500.0))
    hit = row(compare(build_results(), b), "optimized.cache_hit_rate")
    assert hit.mark == "changed (worse)"


def test_a_ratio_across_zero_has_no_interval() -> None:
    """An interval touching zero bounds no quotient; a zero A gives no ratio at all."""
    across = compare_metrics(measured(1.0, 0.0, 2.0), measured(1.5, 1.0, 2.0))
    assert across.ratio == 1.5 and across.ratio_low is None and across.ratio_high is None
    zero = compare_metrics(measured(0.0, 0.0, 0.0), measured(0.01, 0.0, 0.02))
    assert zero.ratio is None


def test_an_unmeasured_side_is_never_changed() -> None:
    """A figure one run did not measure shows, without a ratio or a mark."""
    missing = compare_metrics(measured(1.0, 1.0, 1.0), measured(None, 1.0, 1.0))
    assert (missing.ratio, missing.changed, missing.mark) == (None, False, "")


def test_a_single_measurement_change_carries_a_dagger() -> None:
    """Peak RSS is measured once: a move is marked, with the footnote that says so."""
    b = build_results(profile(peak_rss_mb=130.0))
    rows = compare(build_results(), b)
    rss = row(rows, "optimized.memory_peak_mb")
    assert rss.mark == "changed (worse)†"
    assert "† measured once" in markdown(rows)


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    write(build_results(), tmp_path / "a.json")
    write(build_results(profile(statements={"/api/stages": 2.0})), tmp_path / "b.json")
    return {"a": tmp_path / "a.json", "b": tmp_path / "b.json", "md": tmp_path / "cmp.md"}


def compare_run(runs: dict[str, Path], **overrides: Any) -> tuple[int, str]:
    """run_compare on ``runs``: the exit code and everything it printed."""
    out, buffer = console()
    options: dict[str, Any] = {
        "allow_env_mismatch": False,
        "console": out,
        "markdown_path": runs["md"],
    }
    options.update(overrides)
    return run_compare(runs["a"], runs["b"], **options), buffer.getvalue()


def test_run_compare_prints_and_writes_the_table(runs: dict[str, Path]) -> None:
    """Exit 0; the change shows in the table and in the Markdown."""
    code, output = compare_run(runs)
    assert code == EXIT_PASS
    assert "optimized.statements./api/stages" in output and "changed (worse)" in output
    text = runs["md"].read_text()
    assert text.splitlines()[0].startswith("**sixty compare: ")
    assert "| `optimized.statements./api/stages` | 1 | 2 | 2 | changed (worse) |" in text


@pytest.mark.parametrize("case", ["missing", "corrupt", "future schema", "env mismatch"])
def test_bad_input_exits_3_with_one_line_and_writes_nothing(
    runs: dict[str, Path], case: str
) -> None:
    """One line naming the file and the problem; an earlier Markdown stays as it was."""
    runs["md"].write_text("old")
    blamed = runs["b"]
    if case == "missing":
        blamed.unlink()
        problem = "no such results file"
    elif case == "corrupt":
        blamed.write_text("{")
        problem = "corrupt JSON"
    elif case == "future schema":
        blamed.write_text(blamed.read_text().replace("sixty.results/1", "sixty.results/2"))
        problem = "schema version 2 is newer"
    else:
        write(build_results(fp=fingerprint(db_backend="container")), blamed)
        problem = "db_backend 'embedded' vs 'container'"
    code, output = compare_run(runs)
    assert code == EXIT_ERROR
    (line,) = output.splitlines()
    assert line.startswith(f"sixty compare: error: {blamed}: ")
    assert problem in line
    assert runs["md"].read_text() == "old"
    assert not list(runs["md"].parent.glob(".*.partial"))


def test_an_allowed_env_mismatch_is_flagged_in_every_output(runs: dict[str, Path]) -> None:
    """The table's caption and the Markdown both carry the warning."""
    write(build_results(fp=fingerprint(python="3.13.0")), runs["b"])
    code, output = compare_run(runs, allow_env_mismatch=True)
    assert code == EXIT_PASS
    assert "warning: environment mismatch" in " ".join(output.split())
    assert "> warning: environment mismatch" in runs["md"].read_text()
