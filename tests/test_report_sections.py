"""The report from a results file alone: ablation attribution, the sections' tables, and
both renderings written whole. Small synthetic results (tests/results_support.py); the
real run's report is checked in test_run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sixty_core.harness import claims, report
from sixty_core.harness.report_sections import ablation_effects, ablation_table, fmt
from sixty_core.harness.results import write
from tests.results_support import build_results, creates, profile


def ablated() -> list:  # type: ignore[type-arg]
    return [
        profile("legacy", failures=40, creates_ms=creates(400.0), hits=0.0, misses=0.0),
        profile("optimized", creates_ms=creates(100.0)),
        profile("optimized-no-query_cache", creates_ms=creates(100.0), hits=500.0, misses=500.0),
        profile("optimized-no-robust_create", failures=30, creates_ms=creates(250.0)),
    ]


def test_each_flag_is_credited_with_the_change_turning_it_off_makes() -> None:
    effects = ablation_effects(build_results(*ablated()))
    assert effects["cache_hit_rate"]["query_cache"] == pytest.approx(0.5 - 0.9)
    assert effects["api_failure_rate"]["robust_create"] == pytest.approx(30 / 1000)
    assert effects["deal_create_ms.p50"]["robust_create"] == pytest.approx(150.0, rel=0.05)
    assert "session_cache" not in effects["cache_hit_rate"]  # not run: not credited
    header, rows = ablation_table(build_results(*ablated()))
    assert header == ["metric", "no query_cache", "no robust_create"]
    assert any(r[0].startswith("cache_hit_rate") and r[1] == "-40.0%" for r in rows)


def test_no_ablation_section_without_ablation_runs() -> None:
    results = build_results(*ablated()[:2])
    assert ablation_effects(results) == {}
    assert "## Ablations" not in report.markdown(results)


def test_both_reports_are_rendered_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write(build_results(*ablated()), path)
    paths = report.render(path, tmp_path / "out")
    md = paths.markdown.read_text()
    assert "## Ablations" in md and md.count("| Memory") == 2
    for claim in claims.CLAIMS:
        assert claim.label in md
    page = paths.html.read_text()
    assert page.count("data:image/png;base64,") == 5  # four plots and the ablation bars
    assert "<h2 id='claims'>" in page or '<h2 id="claims">' in page
    assert not list((tmp_path / "out").glob(".*partial"))


def test_figures_read_as_people_write_them() -> None:
    assert fmt(0.0412, "ratio") == "4.12%"
    assert fmt(0.692, "ratio") == "69.2%"
    assert fmt(1234.5, "ms") == "1,234 ms" or fmt(1234.5, "ms") == "1,235 ms"
    assert fmt(None, "MB") == "-"
    assert fmt(3, "count") == "3"
