"""results.json on its own: written whole, read back equal, refused with one line naming
the file when it cannot be used, and two load runs pooled into one sample."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sixty_core.harness.gate import EXIT_PASS, Verdict, evaluate, exit_code, load_budgets
from sixty_core.harness.metrics import all_metrics
from sixty_core.harness.records import pool_loads
from sixty_core.harness.results import ResultsError, read, write
from tests.results_support import build_results, creates, profile


def test_results_round_trip_through_the_file(tmp_path: Path) -> None:
    results = build_results()
    path = tmp_path / "results.json"
    write(results, path)
    assert read(path) == results
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{", "corrupt JSON"),
        (b'{"schema": "sixty.load/1"}', "not a sixty results file"),
        (b'{"schema": "sixty.results/7"}', "newer than this sixty understands"),
        (b'{"schema": "sixty.results/1", "profiles": 3}', "does not match schema"),
    ],
)
def test_unusable_files_are_refused_naming_the_file(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(ResultsError) as caught:
        read(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_two_load_runs_pool_into_one_sample() -> None:
    first = profile(requests=100, failures=2, creates_ms=creates(100.0, 50)).load
    second = profile(requests=60, failures=1, creates_ms=creates(300.0, 50)).load
    assert first is not None and second is not None
    second = msgspec.structs.replace(second, dir="optimized/load-2", peak_rss_mb=140.0)
    pooled = pool_loads(first, second)
    assert len(pooled.raw.ok) == 160 and len(pooled.raw.creates_ms) == 100
    assert pooled.raw.t_s[100] >= first.window_s
    assert pooled.window_s == first.window_s + second.window_s
    assert pooled.peak_rss_mb == 140.0
    assert pooled.pooled_with == ["optimized/load-2"]
    record = msgspec.structs.replace(profile(), load=pooled)
    rate = all_metrics(build_results(record))["optimized.api_failure_rate"]
    assert rate.value == pytest.approx(3 / 160)


def test_the_committed_baseline_passes_the_repository_budgets_against_itself() -> None:
    """What CI compares with: it must read, and pass the budgets it is held to."""
    repo = Path(__file__).resolve().parents[1]
    baseline = repo / "reports" / "baseline" / "results.json"
    checks = evaluate(read(baseline), load_budgets(repo / "pyproject.toml"), read(baseline))
    assert checks and exit_code(checks) == EXIT_PASS, [
        (c.metric, c.verdict, c.reason) for c in checks if c.verdict is not Verdict.PASS
    ]
