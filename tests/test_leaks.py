"""``sixty leaks`` finds what leaks, names it with its stack, and finds nothing else:
the legacy profile's documented leaks, each injected fault, and a clean optimized run.
Real service under real memray, real Postgres; about 60-100 s a run on 2 shared cores."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sixty_core.cli import main
from sixty_core.harness.leaks import CycleSample, LeakResult, Verdict, attach_stacks, verdicts
from sixty_core.memray_sites import MemrayFindings, Site


def run_leaks(out: Path, *args: str) -> LeakResult:
    assert main(["leaks", *args, "--out", str(out)]) == 0
    return msgspec.json.decode((out / "leaks.json").read_bytes(), type=LeakResult)


def stack_of(result: LeakResult, component: str) -> list[str]:
    verdict = next(v for v in result.verdicts if v.component == component)
    return verdict.stack or []


@pytest.fixture(scope="module")
def optimized(tmp_path_factory: pytest.TempPathFactory) -> LeakResult:
    return run_leaks(tmp_path_factory.mktemp("leaks") / "optimized", "--profile", "optimized")


def test_optimized_leaks_nothing(optimized: LeakResult) -> None:
    assert optimized.leaking_components == []
    assert optimized.verdicts == []
    assert optimized.memray is not None and optimized.memray.peak_heap_mb > 1
    # Measured, not asserted: flatness is a target the report judges, not a test.
    assert optimized.memray.heap_slope_mb_per_10k_requests is not None
    assert optimized.peak_rss_mb is not None and optimized.peak_rss_mb > 10
    assert Path(optimized.memray.flamegraph or "").stat().st_size > 10_000
    drained = optimized.samples[-1]
    assert drained.phase == "drained"
    assert drained.series["component_scopes_leaking{feed_client}"] == 0


# A traced legacy run takes 90-100 s on 2 shared cores, so it runs in `make test-slow` (and
# .ci/run). `make test` still sees legacy's two leaking components in the quick `sixty run`
# (tests/test_run.py) and the detector naming their stacks (tests/leaks/test_detector.py).
@pytest.mark.slow
def test_legacy_leaks_what_the_original_leaked_and_nothing_else(tmp_path: Path) -> None:
    result = run_leaks(tmp_path / "run", "--profile", "legacy")
    # ORIGINAL_SYSTEM.md 2.1: the performance monitor's timer, listeners and metric arrays
    # per session, and the log that keeps whole payloads.
    assert result.leaking_components == ["request_log", "session_monitor"]
    assert any("sixty_core/request_log.py" in f for f in stack_of(result, "request_log"))
    assert any("sixty_core/monitor.py" in f for f in stack_of(result, "session_monitor"))
    rules = {(v.component, v.counter) for v in result.verdicts}
    assert ("session_monitor", "component_timers_active{session_monitor}") in rules
    assert ("session_monitor", "component_listeners_active{session_monitor}") in rules


# The detector proving itself on injected faults takes two more traced runs (about 70-90 s
# each on 2 shared cores): they run in `make test-slow` (and .ci/run), so `make test` keeps
# its 15-minute budget. The rules themselves are tested on made-up counters below.
@pytest.mark.slow
def test_injected_faults_are_caught_and_named_with_their_stacks(tmp_path: Path) -> None:
    result = run_leaks(
        tmp_path / "run",
        "--profile",
        "optimized",
        "--inject",
        "feed_listener_leak",
        "--inject",
        "task_per_request",
    )
    assert result.leaking_components == ["feed", "test_faults"]
    counters = {v.counter: v for v in result.verdicts}
    assert counters["feed_listeners"].component == "feed"
    feed_stack = counters["feed_listeners"].stack or []
    assert any("sixty_core/feed.py" in f or "sixty_core/api/sse.py" in f for f in feed_stack)
    tasks = counters["asyncio_tasks"]
    assert tasks.component == "test_faults"
    assert any("_start_orphan_task" in f for f in tasks.stack or [])


@pytest.mark.slow
def test_a_growing_module_list_is_found_by_its_blocks_and_named_by_memray(
    tmp_path: Path,
) -> None:
    result = run_leaks(tmp_path / "run", "--profile", "optimized", "--inject", "growing_list")
    assert result.leaking_components == ["test_faults"]
    [verdict] = result.verdicts
    assert verdict.counter == "process_allocated_blocks"
    assert any("_grow_module_list" in f for f in verdict.stack or [])


# --- the rules, on made-up counters ------------------------------------------------------


def sample(phase: str, cycle: int, **series: float) -> CycleSample:
    """Ten requests a cycle."""
    return CycleSample(phase, cycle, cycle * 10, float(cycle), 0, dict(series))


def test_growth_means_every_cycle_and_leftovers_count() -> None:
    samples = [
        sample("baseline", 3, feed_listeners=5, asyncio_tasks=10, cache_entries=1),
        sample("cycle", 4, feed_listeners=6, asyncio_tasks=11, cache_entries=2),
        sample("cycle", 5, feed_listeners=7, asyncio_tasks=10, cache_entries=2),
        sample("cycle", 6, feed_listeners=8, asyncio_tasks=12, cache_entries=3),
        sample("drained", 6, feed_listeners=8, asyncio_tasks=12, cache_entries=3),
    ]
    found = verdicts(samples)
    assert [(v.component, v.rule) for v in found] == [
        ("feed", "growth"),
        ("asyncio_tasks", "leftover"),
    ]
    assert found[0].values == [5, 6, 7, 8]


def test_the_allocated_block_count_is_read_on_its_floor() -> None:
    jitter = [100, 104, 99, 103, 101, 98, 102, 100]  # churn, no growth
    rising = [100, 204, 201, 306, 303, 409, 405, 511]  # floors 201 < 303 < 405
    for values, leaks in ((jitter, False), (rising, True)):
        samples = [sample("baseline", 0, process_allocated_blocks=values[0])]
        samples += [
            sample("cycle", i, process_allocated_blocks=v) for i, v in enumerate(values[1:], 1)
        ]
        samples.append(sample("drained", 7, process_allocated_blocks=values[-1]))
        assert bool(verdicts(samples)) is leaks


def test_an_anonymous_growth_takes_the_name_of_the_site_that_left_most_behind() -> None:
    heap = Verdict("heap", "growth", "process_allocated_blocks", [1, 2, 3], "grew")
    sites = [
        Site("request_log.py:1 record", "request_log", 900, 9000, ["request_log.py:1 record"]),
        Site("faults.py:2 grow", "test_faults", 500, 5000, ["faults.py:2 grow"]),
    ]
    memray = MemrayFindings("c", None, 1.0, 0.0, 0, {}, sites)
    # The request log's own counter stayed flat: it holds a bounded amount.
    [named] = attach_stacks([heap], memray, frozenset({"request_log"}))
    assert named.component == "test_faults" and named.stack == ["faults.py:2 grow"]


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cycles", "5", "--warmup", "3"], "--warmup must leave at least 3 tracked cycles"),
        (["--cycles", "5000"], "--cycles must be at most 1000"),
        (["--profile", "fastest"], "unknown profile 'fastest'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    assert main(["leaks", *args, "--out", str(tmp_path / "o")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_unknown_fault_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["leaks", "--inject", "everything"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'everything'" in capsys.readouterr().err
