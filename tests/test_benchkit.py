"""The benchmark kit: counters, interleaving, intervals, the table, and ``sixty bench`` as a
user runs it. Timing itself is never asserted here (the machine is shared); structure,
counts and error handling are."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from sixty_core.benchkit import summary
from sixty_core.benchkit.counters import allocations_per_call, count_calls
from sixty_core.benchkit.interleave import Interleaved, bootstrap_median_interval
from sixty_core.db.pool import OPTIMIZED_POOL, Pool
from sixty_core.db.recorder import count_statements, recording
from tests.test_cli import run_sixty

pytest_plugins = ["pytester"]


@pytest.fixture
def loop() -> Any:
    fresh = asyncio.new_event_loop()
    yield fresh
    fresh.close()


def test_recording_blocks_nest() -> None:
    """An inner block's counts reach the enclosing block too (a benchmark around an ASGI
    call sees what the request's own tally counted)."""
    with recording() as outer:
        count_statements()
        with recording() as inner:
            count_statements(2)
    assert (inner.statements, outer.statements) == (2, 3)


def test_count_calls_counts_statements_on_the_connection(
    loop: asyncio.AbstractEventLoop, db_dsn: str
) -> None:
    pool = Pool(db_dsn, OPTIMIZED_POOL, application_name="t_count_calls")
    loop.run_until_complete(pool.open())
    total = {"queries": 0}

    async def two_queries() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
            await conn.fetchval("SELECT 2")
        total["queries"] += 2

    try:
        counters = count_calls(loop, two_queries, 5, {"mine": lambda: dict(total)})
    finally:
        loop.run_until_complete(pool.close())
    assert counters["statements"] == 2
    assert counters["mine.queries"] == 2
    assert counters["auth_lookups"] == 0


def test_allocations_per_call_sees_python_objects(loop: asyncio.AbstractEventLoop) -> None:
    kept: list[Any] = []

    async def allocate() -> None:
        kept.append([[i] for i in range(500)])  # 500 small lists that stay alive

    many = allocations_per_call(loop, allocate, 4)

    async def nothing() -> None:
        return None

    few = allocations_per_call(loop, nothing, 4)
    assert many is not None and few is not None
    assert many >= 500 > few


def test_interleaving_alternates_the_order(loop: asyncio.AbstractEventLoop) -> None:
    order: list[str] = []

    def side(name: str) -> Any:
        async def call() -> None:
            order.append(name)

        return call

    timed = Interleaved(loop, {"a": side("a"), "b": side("b")})
    for _ in range(4):
        timed.run_round()
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert all(len(s.per_call_s) == 4 for s in timed.sides.values())
    ratio = timed.ratio("a", "b")
    assert ratio["rounds"] == 4 and ratio["low"] <= ratio["ratio"] <= ratio["high"]


def test_bootstrap_interval_brackets_the_median_and_refuses_tiny_samples() -> None:
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 0.8]
    low, high = bootstrap_median_interval(values)
    assert low is not None and high is not None
    assert low <= 1.0 <= high
    assert bootstrap_median_interval([1.0, 2.0]) == (None, None)
    # The interval is a function of the samples: the same samples, the same interval.
    assert bootstrap_median_interval(values) == (low, high)


def _bench_json(tmp_path: Path) -> Path:
    data = {
        "benchmarks": [
            {
                "name": "test_read[get_deal]",
                "stats": {"median": 0.001, "iqr": 0.0001},
                "extra_info": {
                    "kind": "interleaved",
                    "sides": {
                        "legacy": {
                            "median_us": 400.0,
                            "iqr_us": 10.0,
                            "cpu_us_per_call": 300.0,
                            "counters": {"statements": 2.0, "allocations": 900.0},
                        },
                        "optimized": {
                            "median_us": 40.0,
                            "iqr_us": 1.0,
                            "cpu_us_per_call": 39.0,
                            "counters": {"statements": 0.0, "cache.cache_hits": 1.0},
                        },
                    },
                    "ratios": [
                        {
                            "numerator": "legacy",
                            "denominator": "optimized",
                            "ratio": 10.0,
                            "low": 9.5,
                            "high": 10.4,
                        }
                    ],
                },
            },
            {
                "name": "test_hit",
                "stats": {"median": 6e-7, "iqr": 2e-8},
                "extra_info": {"kind": "single", "counters": {"statements": 0.0}},
            },
        ]
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def test_summary_rows_come_from_the_json(tmp_path: Path) -> None:
    rows = summary.rows(summary.load(_bench_json(tmp_path)))
    assert [(r.benchmark, r.side) for r in rows] == [
        ("read[get_deal]", "legacy"),
        ("", "optimized"),
        ("hit", ""),
    ]
    assert rows[1].ratio == "legacy/optimized 10.00x [9.50, 10.40]"
    assert rows[1].other == "cache_hits=1"
    assert rows[2].median_us == pytest.approx(0.6)
    table = summary.markdown(summary.load(_bench_json(tmp_path)))
    assert "| read[get_deal] | legacy | 400.0 |" in table


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "no such file"), ("{not json", "not readable JSON"), ("[]", "not pytest-benchmark")],
)
def test_summary_refuses_bad_files(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(summary.BenchResultsError, match=problem):
        summary.load(path)


def test_async_fixture_times_inside_the_loop(pytester: pytest.Pytester) -> None:
    """The abench fixture under real pytest-benchmark: calibration picks many iterations for
    a fast coroutine (the loop is entered once per round, not per call), and the counters
    and CPU time land in extra_info."""
    pytester.makeconftest(
        """
import asyncio
import pytest
from sixty_core.benchkit.timing import AsyncBench

@pytest.fixture
def abench(benchmark):
    loop = asyncio.new_event_loop()
    yield AsyncBench(benchmark, loop)
    loop.close()
"""
    )
    pytester.makepyfile(
        """
def test_fast(abench):
    calls = []
    async def fast():
        calls.append(1)
        return len(calls)
    assert abench(fast, sources={"n": lambda: {"calls": len(calls)}}) >= 1
"""
    )
    out = pytester.path / "b.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--benchmark-min-time=0.0001", f"--benchmark-json={out}"
    )
    result.assert_outcomes(passed=1)
    bench = json.loads(out.read_text())["benchmarks"][0]
    assert bench["stats"]["iterations"] > 1
    assert bench["extra_info"]["counters"]["n.calls"] == 1
    assert bench["extra_info"]["cpu_us_per_call"] is not None


def test_sixty_bench_show_of_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    result = run_sixty("bench", "--show", str(tmp_path / "nope.json"))
    assert result.returncode == 1
    assert "nope.json: no such file" in result.stderr


def test_sixty_bench_refuses_an_unknown_profile_before_running(tmp_path: Path) -> None:
    result = run_sixty("bench", "--quick", "--profiles", "legacy,turbo", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "unknown profile 'turbo'" in result.stderr
    assert not any(tmp_path.iterdir())


def test_sixty_bench_never_overwrites_results(tmp_path: Path) -> None:
    (tmp_path / "bench.json").write_text("{}")
    result = run_sixty("bench", "--quick", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "exists" in result.stderr
    assert (tmp_path / "bench.json").read_text() == "{}"


def test_sixty_bench_reports_a_failing_suite_and_writes_no_result(tmp_path: Path) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "conftest.py").write_text(
        "def pytest_addoption(parser):\n"
        "    for name in ('rounds', 'min-batch-ms', 'profiles'):\n"
        "        parser.addoption(f'--sixty-{name}')\n"
    )
    (suites / "test_broken.py").write_text(
        "def test_broken(benchmark):\n    benchmark(lambda: 1 / 0)\n"
    )
    out = tmp_path / "out"
    result = run_sixty("bench", "--quick", "--suites", str(suites), "--out", str(out))
    assert result.returncode == 1
    assert "did not pass" in result.stderr and "test_broken" in result.stderr
    assert not (out / "bench.json").exists()
    assert (out / "bench.log").exists()


def test_sixty_bench_says_when_no_benchmark_matches_k(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_sixty("bench", "--quick", "-k", "no_such_benchmark", "--out", str(out))
    assert result.returncode == 1
    assert "no benchmark matches -k 'no_such_benchmark'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "bench.json").exists()


@pytest.mark.slow
def test_sixty_bench_quick_writes_json_and_prints_the_table(tmp_path: Path) -> None:
    """A real timed run of two suites: the JSON holds both profiles' sides and counters."""
    out = tmp_path / "run"
    result = run_sixty("bench", "--quick", "-k", "test_hit or read and stages", "--out", str(out))
    assert result.returncode == 0, result.stderr + result.stdout
    data = json.loads((out / "bench.json").read_text())
    names = sorted(b["name"] for b in data["benchmarks"])
    assert names == ["test_hit", "test_read[stages]"]
    stages = next(b for b in data["benchmarks"] if b["name"] == "test_read[stages]")
    sides = stages["extra_info"]["sides"]
    assert set(sides) == {"legacy", "optimized"}
    assert sides["legacy"]["counters"]["statements"] >= 1
    assert stages["extra_info"]["ratios"][0]["numerator"] == "legacy"
    assert "legacy/this" in result.stdout and "benchmarks in" in result.stdout
    assert (out / "bench.md").read_text().startswith("| benchmark |")
