"""The gate's self-test and calibration, on their own logic: which regressions the
self-test must catch, how a run is judged against the baseline, and how noise becomes a
proposed budget. The real runs behind them are ``sixty run``'s (tested in test_run)."""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sixty_core.faults import TEST_FAULTS
from sixty_core.harness import calibrate, gate, selftest
from sixty_core.harness.results import write
from sixty_core.profiles import FLAGS
from tests.results_support import build_results, profile

BUDGETS = [
    gate.parse_budget("optimized.statements.*", "+0%"),
    gate.parse_budget("optimized.api_failure_rate", "< 0.01"),
]


def test_every_flag_and_every_regression_fault_is_a_known_regression() -> None:
    regressions = selftest.known_regressions()
    assert {r.profile for r in regressions} >= {f"optimized-no-{flag}" for flag in FLAGS}
    faults = {fault for r in regressions for fault in r.faults}
    assert faults == set(selftest.FAULTS) and faults <= set(TEST_FAULTS)
    needs_leaks = {r.name for r in regressions if r.leaks}
    assert needs_leaks == {"no resource_tracking", "fault task_per_request"}


def test_relabel_names_the_one_profile_for_the_budgets() -> None:
    results = build_results(profile("optimized-no-query_cache"))
    assert [p.profile for p in selftest.relabel(results, "optimized").profiles] == ["optimized"]


def test_an_unchanged_run_passes_and_a_regression_is_caught_by_name(tmp_path: Path) -> None:
    baseline = build_results(profile())
    same = tmp_path / "same.json"
    write(build_results(profile()), same)
    worse = tmp_path / "worse.json"
    write(
        build_results(
            profile("optimized-no-static_cache", statements={"/api/stages": 3.0, "/api/deals": 3.0})
        ),
        worse,
    )
    unchanged = selftest.judge("A/A", same, BUDGETS, baseline)
    assert unchanged.caught_by == [] and unchanged.verdict == "PASS"
    caught = selftest.judge("no static_cache", worse, BUDGETS, baseline)
    assert caught.caught_by == ["optimized.statements./api/stages"]
    assert caught.verdict == "FAIL"


def test_a_regression_no_budget_catches_is_reported_missed(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write(build_results(profile()), path)
    outcome = selftest.judge("no bounded_lists", path, BUDGETS, build_results(profile()))
    result = selftest.SelftestResult(
        schema=selftest.SCHEMA,
        baseline="b",
        budgets="p",
        pairs=[],
        false_alarms=0,
        false_alarm_rate=0.0,
        regressions=[outcome],
        missed=[o.name for o in [outcome] if not o.caught_by],
    )
    assert result.missed == ["no bounded_lists"]
    assert not selftest.passed(result)


def test_noise_becomes_a_budget_for_the_false_alarm_rate() -> None:
    steady = calibrate.noise_of("c", [3.0, 3.0, 3.0], exact=True, lower_is_better=True, rate=0.01)
    assert steady.proposed == 0.0 and calibrate.budget_text(steady) == "+0%"
    noisy = calibrate.noise_of(
        "m", [100.0, 110.0, 90.0], exact=False, lower_is_better=True, rate=0.01
    )
    assert noisy.cv == pytest.approx(0.1)
    # z(0.99) * sqrt(2) * 0.1 = 0.329
    assert noisy.proposed == pytest.approx(2.3263 * math.sqrt(2) * 0.1, rel=1e-3)
    assert calibrate.budget_text(noisy) == "+33%"
    rate = calibrate.noise_of("h", [0.7, 0.72, 0.68], exact=False, lower_is_better=False, rate=0.05)
    assert calibrate.budget_text(rate) is not None and calibrate.budget_text(rate).startswith("-")  # type: ignore[union-attr]
    wild = calibrate.noise_of("z", [0.0, 1.0, -1.0], exact=False, lower_is_better=True, rate=0.01)
    assert wild.proposed is None and calibrate.budget_text(wild) is None


def test_the_proposed_budgets_paste_into_the_gate_table() -> None:
    result = calibrate.Calibration(
        calibrate.SCHEMA,
        ["a", "b"],
        0.01,
        [
            calibrate.noise_of(
                "optimized.x", [1.0, 1.2], exact=False, lower_is_better=True, rate=0.01
            ),
            calibrate.noise_of(
                "optimized.y", [2.0, 2.0], exact=True, lower_is_better=True, rate=0.01
            ),
        ],
    )
    table = tomllib.loads("[tool.sixty.gate]\n" + calibrate.toml_snippet(result))
    parsed = [gate.parse_budget(k, v) for k, v in table["tool"]["sixty"]["gate"].items()]
    assert [b.key for b in parsed] == ["optimized.x", "optimized.y"]
    assert all(b.relative for b in parsed)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["calibrate", "--runs", "1"], "--runs must be between 2 and 20"),
        (["calibrate", "--false-alarm-rate", "0.7"], "--false-alarm-rate must be"),
        (["selftest", "--pairs", "0"], "--pairs must be between 1 and 20"),
    ],
)
def test_bad_counts_are_refused_before_anything_runs(
    args: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "sixty_core", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert message in done.stderr
    assert not out.exists()
