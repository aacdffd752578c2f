"""``sixty scale`` and its arithmetic: growth exponents, the steps shape, the load sweep's
windows and saturation rule, and one real sweep end to end (scales 1, 2 and 4 of the
optimized profile, and a two-step load sweep) whose curves are checked against the raw
samples they came from."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sixty_core.harness import gate, growth, report, scaling, scaling_report
from sixty_core.harness.metrics import all_metrics
from sixty_core.harness.results import read as read_results
from sixty_core.harness.results import write as write_results
from sixty_core.harness.scaling_results import ScalingRecord, read
from sixty_core.load import samples
from sixty_core.load.samples import ACTION, Sample
from sixty_core.load.shapes import parse_steps, plan, step_windows
from sixty_core.load.stats import percentile

REPO = Path(__file__).resolve().parents[1]
SIZES = [500, 1000, 2000, 4000]


def sixty(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixty_core", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- growth exponents ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "name"),
    [
        (0.0, "flat"),
        (0.05, "flat"),
        (0.5, "sublinear"),
        (1.0, "linear"),
        (2.0, "worse than linear"),
        (-0.5, "falls"),
    ],
)
def test_an_exact_power_law_gives_its_exponent_and_name(k: float, name: str) -> None:
    fit = growth.fit_exponent(SIZES, [3.0 * n**k for n in SIZES])
    assert fit.exponent == pytest.approx(k, abs=1e-9)
    assert fit.growth == name
    assert fit.low == pytest.approx(k, abs=1e-6) and fit.high == pytest.approx(k, abs=1e-6)


def test_noisy_points_widen_the_interval_around_the_slope() -> None:
    fit = growth.fit_exponent(SIZES, [10.0, 21.0, 38.0, 85.0])
    assert fit.exponent is not None and fit.low is not None and fit.high is not None
    assert fit.low < fit.exponent < fit.high
    assert fit.low < 1.0 < fit.high


def test_a_bootstrap_of_the_raw_samples_covers_the_true_exponent() -> None:
    rng = np.random.default_rng(3)
    data = [rng.exponential(n / 100, 400) for n in SIZES]  # median grows linearly
    medians = [percentile(d, 50.0) for d in data]
    fit = growth.fit_exponent(SIZES, medians, samples=[list(d) for d in data], statistic=50.0)
    assert fit.low is not None and fit.high is not None
    assert fit.low < 1.0 < fit.high and fit.high - fit.low < 0.5


def test_a_zero_among_the_values_has_no_power_law() -> None:
    fit = growth.fit_exponent(SIZES, [0.0, 1.0, 2.0, 4.0])
    assert fit.exponent is None and fit.growth == "from zero"
    assert growth.fit_exponent(SIZES, [0.0] * 4).growth == "flat"


def test_a_fit_refuses_one_size() -> None:
    with pytest.raises(ValueError, match="two or more distinct sizes"):
        growth.fit_exponent([500, 500], [1.0, 2.0])


# --- load sweep arithmetic -----------------------------------------------------------


def steps(*figures: tuple[int, float, float]) -> list[growth.StepFigures]:
    return [growth.StepFigures(users, rps, p99) for users, rps, p99 in figures]


def test_saturation_is_the_step_after_which_throughput_stalls_and_p99_climbs() -> None:
    sweep = steps((10, 20.0, 50.0), (20, 40.0, 55.0), (50, 52.0, 400.0), (100, 53.0, 2000.0))
    assert growth.saturation_index(sweep) == 1
    rising = steps((10, 20.0, 50.0), (20, 40.0, 60.0), (50, 99.0, 70.0))
    assert growth.saturation_index(rising) is None
    # Throughput stalls but p99 holds and nothing is shed: a client-side limit.
    flat_p99 = steps((10, 20.0, 50.0), (20, 21.0, 52.0))
    assert growth.saturation_index(flat_p99) is None


def test_a_service_that_sheds_load_saturates_where_its_failures_rise() -> None:
    """Admission control keeps p99 flat by answering 503 fast: good throughput stalls
    and the failed share jumps, which is saturation too."""
    shedding = [
        growth.StepFigures(100, 108.0, 290.0, 0.0),
        growth.StepFigures(200, 156.0, 765.0, 0.05),
        growth.StepFigures(400, 170.0, 748.0, 0.34),
    ]
    assert growth.saturation_index(shedding) == 1
    steady_errors = [
        growth.StepFigures(100, 108.0, 290.0, 0.05),
        growth.StepFigures(200, 110.0, 300.0, 0.06),
    ]
    assert growth.saturation_index(steady_errors) is None


def test_the_best_throughput_within_budget_skips_steps_over_it() -> None:
    sweep = steps((10, 20.0, 50.0), (20, 40.0, 900.0), (50, 45.0, 1500.0))
    best = growth.best_within_budget(sweep, 1000.0)
    assert best is not None and best.users == 20
    assert growth.best_within_budget(sweep, 10.0) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "give the load steps"),
        ("10,x", "whole numbers"),
        ("0,5", "1 to"),
        ("20,10", "must rise"),
        ("10,10", "must rise"),
        ("10,99999", "1 to"),
    ],
)
def test_bad_load_steps_are_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_steps(text)


def test_the_steps_shape_holds_each_count_for_an_equal_share() -> None:
    counts = [plan("steps", t, 999, 1.0, 30.0, (2, 4, 8)) for t in (0.0, 9.9, 10.0, 25.0, 29.9)]
    assert [c[0] for c in counts if c] == [2, 2, 4, 8, 8]
    assert all(c is not None and c[1] >= c[0] for c in counts), "each step spawns at once"
    assert plan("steps", 30.0, 999, 1.0, 30.0, (2, 4, 8)) is None
    assert step_windows((2, 4), 20.0) == [(2, 0.0, 10.0), (4, 10.0, 20.0)]


def sample(
    t: float, ms: float, name: str = "GET /api/stages", ok: bool = True, kind: str = "GET"
) -> Sample:
    return Sample(t, kind, name, ms, ok, 200 if ok else 500, 10, None if ok else "x", "u")


def test_step_points_count_requests_by_when_they_ended_past_the_settle() -> None:
    start = 1000.0
    run = [sample(start, 10.0)]  # the run's first request sets its clock
    run += [sample(start + 3 + i * 0.1, 10.0) for i in range(50)]  # step 1, settled
    run += [sample(start + 1, 10.0)]  # step 1's ramp: dropped
    run += [sample(start + 13 + i * 0.1, 100.0, ok=i % 10 != 0) for i in range(60)]  # step 2
    run += [sample(start + 4, 9000.0, name="GET /api/deals/stream")]  # a stream: no latency
    run += [sample(start + 5, 80.0, name="create deal (wizard)", kind=ACTION)]
    points = scaling.step_points(run, [5, 10], step_s=10.0, settle_s=2.0)
    assert [p.requests for p in points] == [50, 60]
    assert points[0].rps == points[0].ok_rps == pytest.approx(50 / 8.0)
    assert points[1].failures == 6 and points[1].ok_rps == pytest.approx(54 / 8.0)
    assert points[0].p99_ms == pytest.approx(10.0) and points[1].p50_ms == pytest.approx(100.0)


# --- one real sweep ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scale") / "sweep"
    done = sixty(
        "scale",
        "--scales",
        "1,2,4",
        "--profiles",
        "optimized",
        "--duration",
        "5",
        "--load-steps",
        "2,6",
        "--step-s",
        "6",
        "--out",
        str(out),
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sixty scale finished" in done.stdout
    return out


def test_a_sweep_writes_its_record_report_and_plots(sweep: Path) -> None:
    record = read(sweep / "scale.json")
    assert record.scales == [1, 2, 4] and record.profiles == ["optimized"]
    for name in ("scale.md", "growth.png", "load-sweep.png"):
        assert (sweep / name).stat().st_size > 1000, name
    assert (sweep / "growth.png").read_bytes().startswith(b"\x89PNG")
    text = (sweep / "scale.md").read_text()
    assert "## Growth over deal count" in text and "## Load sweep" in text
    assert "embedded Postgres started here" in text
    metrics = {c.metric for c in record.curves}
    assert metrics >= {"p50_ms", "p99_ms", "rps", "statements", "response_bytes", "peak_rss_mb"}
    for curve in record.curves:
        assert [p.deals for p in curve.points] == [500, 1000, 2000]
        assert curve.growth in {
            "falls",
            "flat",
            "sublinear",
            "linear",
            "worse than linear",
            "from zero",
        }


def test_latency_points_are_the_percentiles_of_the_raw_samples(sweep: Path) -> None:
    record = read(sweep / "scale.json")
    curve = record.curve("optimized", "p50_ms", "GET /api/deals")
    assert curve is not None
    for point in curve.points:
        raw = samples.read_dir(sweep / point.dir / "samples").samples
        mine = [s.ms for s in raw if s.name == "GET /api/deals" and s.kind != ACTION]
        assert point.value == pytest.approx(percentile(mine, 50.0))
        assert point.value is not None and point.low is not None and point.high is not None
        assert point.low <= point.value <= point.high


def test_perturbing_one_measured_point_moves_the_exponent(sweep: Path) -> None:
    record = read(sweep / "scale.json")
    curve = record.curve("optimized", "p50_ms", "GET /api/deals")
    assert curve is not None and curve.exponent is not None
    sizes = [p.deals for p in curve.points]
    values = [p.value or 0.0 for p in curve.points]
    assert growth.fit_exponent(sizes, values).exponent == pytest.approx(curve.exponent)
    values[-1] *= 8  # the largest scale 8x slower: least squares moves the slope by this
    moved = growth.fit_exponent(sizes, values).exponent
    assert moved is not None
    expected_rise = (
        math.log(8)
        * (math.log(sizes[-1]) - np.mean(np.log(sizes)))
        / float(np.sum((np.log(sizes) - np.mean(np.log(sizes))) ** 2))
    )
    assert moved - curve.exponent == pytest.approx(expected_rise)


def test_the_load_sweep_has_one_settled_step_per_user_count(sweep: Path) -> None:
    record = read(sweep / "scale.json")
    (load_sweep,) = record.sweeps
    assert [s.users for s in load_sweep.steps] == [2, 6]
    assert all(s.requests > 0 and s.rps > 0 for s in load_sweep.steps)
    assert load_sweep.settle_s == pytest.approx(2.0)
    raw = samples.read_dir(sweep / load_sweep.dir / "samples").samples
    again = scaling.step_points(raw, [2, 6], 6.0, 2.0)
    assert [s.requests for s in again] == [s.requests for s in load_sweep.steps]


def test_the_run_report_shows_the_sweeps(sweep: Path, tmp_path: Path) -> None:
    results = read_results(REPO / "reports" / "baseline" / "results.json")
    results.scaling = read(sweep / "scale.json")
    write_results(results, tmp_path / "results.json")
    paths = report.render(tmp_path / "results.json", tmp_path)
    text = paths.markdown.read_text()
    assert "## How cost grows" in text
    assert "no saturation up to" in text or "saturates after" in text
    page = paths.html.read_text()
    assert page.count("data:image/png;base64,") >= 6  # the run's plots and the two sweeps'


def test_scaling_record_round_trips(sweep: Path) -> None:
    record = read(sweep / "scale.json")
    assert isinstance(record, ScalingRecord)
    assert scaling_report.markdown(record, images=False).count("|") > 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scales", "0,1"], "scales must be distinct seed scales from 1 to 1000"),
        (["--scales", "1,x"], "whole numbers"),
        (["--load-steps", "5,2"], "must rise"),
        (["--scales", "1,2", "--host", "http://127.0.0.1:9"], "holds one data size"),
        (["--scales", "1", "--load-steps", "none"], "nothing to sweep"),
        (["--duration", "1"], "--duration must be 5 to 600 s"),
        (["--workers", "99"], "--workers must be 0 to 16"),
    ],
)
def test_bad_input_is_refused_with_one_line_before_anything_starts(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = sixty("scale", *args, "--out", str(tmp_path / "out"))
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists(), "nothing written"


def test_the_gate_holds_growth_exponents_to_budgets(sweep: Path) -> None:
    results = read_results(REPO / "reports" / "baseline" / "results.json")
    results.scaling = read(sweep / "scale.json")
    budgets = [
        gate.parse_budget("optimized.growth.statements.GET /api/deals", "< 0.1"),
        gate.parse_budget("optimized.growth.statements.*", "< 5"),
        gate.parse_budget("optimized.growth.statements.GET /api/deals", "> 0.5"),
    ]
    checks = gate.evaluate(results, budgets, None)
    first, *wildcard, impossible = checks
    assert first.verdict is gate.Verdict.PASS and first.value == 0.0
    assert len(wildcard) >= 5 and all(c.metric.startswith("optimized.growth.") for c in wildcard)
    assert impossible.verdict is gate.Verdict.FAIL
    keys = all_metrics(results)
    assert "optimized.best_rps_within_p99_budget" in keys and "optimized.saturation_users" in keys
