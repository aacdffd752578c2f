"""The pieces of a load run that need no service: contract checks, exact statistics,
shapes, the samples file format, scenarios and the probe's parsing and deltas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from sixty_core.load import contract, stats
from sixty_core.load.probes import ProbeSample, parse_metrics, run_figures
from sixty_core.load.samples import ACTION, Sample, SampleWriter, read_dir
from sixty_core.load.scenario import (
    STANDARD,
    STEADY_DATA,
    USER_TASKS,
    Scenario,
    client_for_profile,
)
from sixty_core.load.shapes import SHAPES, check_shape, plan


def body(document: object) -> bytes:
    return json.dumps(document).encode()


# --- contract ------------------------------------------------------------------------


def test_a_kept_contract_has_no_reason() -> None:
    deal = {"data": {"id": "d1", "name": "x"}, "error": None}
    assert contract.check(201, body(deal), expect=(201,), data="deal") is None
    listing = {"data": [{"id": "a"}, {"id": "b"}], "error": None, "count": 2}
    assert contract.check(200, body(listing), expect=(200,), data="list") is None


def test_the_legacy_create_envelope_breaks_the_contract() -> None:
    legacy = {"data": {"data": {"id": "d1"}}, "error": "Deal created successfully"}
    reason = contract.check(201, body(legacy), expect=(201,), data="deal")
    assert reason == "contract: error is set on a 201: 'Deal created successfully'"
    # ... yet a lenient client (the original's direct insert) finds the id inside it.
    assert contract.deal_id_anywhere(body(legacy)) == "d1"


@pytest.mark.parametrize(
    ("status", "payload", "shape", "expected"),
    [
        (
            503,
            {"data": None, "error": {"code": "overloaded", "message": "m"}},
            "any",
            "status 503 (overloaded), expected 200",
        ),
        (200, "not an envelope", "any", "contract: body is not the envelope {data, error}"),
        (200, {"data": {}, "error": None}, "list", "contract: data is not a list"),
        (200, {"data": [], "error": None}, "object", "contract: data is not an object"),
        (200, {"data": {"name": "x"}, "error": None}, "deal", "contract: data.id is missing"),
        (
            200,
            {"data": [1], "error": None, "count": 3},
            "list",
            "contract: count 3 is not the length of data (1)",
        ),
    ],
)
def test_each_broken_contract_says_what_broke(
    status: int, payload: object, shape: contract.DataShape, expected: str
) -> None:
    assert contract.check(status, body(payload), expect=(200,), data=shape) == expected


def test_a_body_that_is_not_json_is_a_contract_failure() -> None:
    assert contract.check(200, b"<html>", expect=(200,)) == "contract: body is not JSON"
    assert contract.check(502, b"<html>", expect=(200,)) == "status 502, expected 200"


# --- statistics ----------------------------------------------------------------------


def test_percentiles_interpolate_between_order_statistics() -> None:
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([4, 1, 3, 2], 100) == 4
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 50)


def test_bootstrap_intervals_are_seeded_and_hold_the_estimate() -> None:
    values = np.random.default_rng(3).lognormal(2, 1, size=5000)
    first = stats.bootstrap_percentile(values, 99, seed=1)
    again = stats.bootstrap_percentile(values, 99, seed=1)
    assert first == again
    assert first.low <= first.value <= first.high
    assert first.value == pytest.approx(float(np.percentile(values, 99)))
    # A p99 from exact samples never exceeds the maximum (Locust's rounded one can).
    assert first.high <= values.max()


def test_wilson_interval_is_sound_at_zero_failures() -> None:
    none = stats.wilson_interval(0, 400)
    assert none.value == 0 and none.low == 0 and 0 < none.high < 0.02
    some = stats.wilson_interval(15, 100)
    assert some.low < 0.15 < some.high
    assert stats.wilson_interval(0, 0) == stats.Estimate(0.0, 0.0, 0.0)


def sample(ms: float, *, ok: bool = True, name: str = "GET /x", kind: str = "GET") -> Sample:
    return Sample(
        t=1000.0,
        kind=kind,
        name=name,
        ms=ms,
        ok=ok,
        status=200 if ok else 503,
        bytes=10,
        reason=None if ok else "status 503, expected 200",
        user="SalesRep",
    )


def test_endpoint_stats_count_failures_by_reason() -> None:
    rows = [sample(float(i)) for i in range(1, 100)] + [sample(500.0, ok=False)]
    figures = stats.endpoint_stats("GET /x", "GET", rows, window_s=10.0)
    assert figures.requests == 100 and figures.failures == 1
    assert figures.failure_reasons == {"status 503, expected 200": 1}
    assert figures.p50_ms is not None and figures.p50_ms.value == pytest.approx(50.5)
    assert figures.max_ms == 500.0 and figures.rps == 10.0


def test_actions_are_listed_after_requests() -> None:
    rows = [sample(1.0, kind=ACTION, name="create")] * 5 + [sample(2.0)]
    kinds = [s.kind for s in stats.by_endpoint(rows, 1.0)]
    assert kinds == ["GET", ACTION]


# --- shapes --------------------------------------------------------------------------


def test_every_shape_ends_and_stays_within_its_users() -> None:
    for shape in SHAPES:
        counts = [plan(shape, t / 10, 20, 5.0, 30.0, (5, 10, 20)) for t in range(300)]
        assert all(c is not None and 1 <= c[0] <= 20 for c in counts)
        assert plan(shape, 30.0, 20, 5.0, 30.0, (5, 10, 20)) is None


def test_ramp_climbs_and_spike_peaks_in_the_middle() -> None:
    ramp = [plan("ramp", t, 10, 1.0, 10.0) for t in range(10)]
    users = [r[0] for r in ramp if r is not None]
    assert users == sorted(users) and users[0] == 1 and users[-1] == 9
    assert plan("spike", 1.0, 20, 2.0, 10.0) == (5, 20.0)
    assert plan("spike", 5.0, 20, 2.0, 10.0) == (20, 20.0)


def test_an_unknown_shape_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown shape 'wave'"):
        check_shape("wave")


# --- samples -------------------------------------------------------------------------


def test_samples_round_trip_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    writer = SampleWriter(tmp_path)
    for i in range(3):
        writer.write(sample(float(i)))
    writer.close()
    with writer.path.open("ab") as handle:
        handle.write(b'[1.0, "GET", "/x"')  # a process killed mid-line
    merged = read_dir(tmp_path)
    assert [s.ms for s in merged.samples] == [0.0, 1.0, 2.0]
    assert merged.torn_lines == 1 and merged.files == [writer.path.name]


def test_a_corrupt_line_before_the_last_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "samples-h-1.jsonl"
    good = msgspec.json.encode(sample(1.0)).decode()
    path.write_text(f"{good}\nnot json\n{good}\n")
    with pytest.raises(ValueError, match=r"samples-h-1.jsonl:2"):
        read_dir(tmp_path)


# --- scenarios -----------------------------------------------------------------------


def test_the_standard_scenario_round_trips_through_json() -> None:
    assert Scenario.from_json(STANDARD.to_json()) == STANDARD
    smaller = STANDARD.with_overrides(users=4, duration_s=5)
    assert (smaller.users, smaller.duration_s, smaller.name) == (4, 5, "standard")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weights": {"Robot": 1}}, "unknown user classes"),
        ({"weights": {"SalesRep": 0}}, "at least one user class"),
        ({"think_s": [2, 1]}, "think_s"),
        ({"users": 0}, "users"),
        ({"task_weights": {"Robot": {"watch": 1}}}, "unknown user class in task_weights"),
        ({"task_weights": {"SalesRep": {"sleep": 1}}}, "unknown SalesRep tasks.*known: "),
        ({"task_weights": {"FeedViewer": {"watch": 0}}}, "leave FeedViewer no task"),
    ],
)
def test_a_bad_scenario_says_what_is_wrong(change: dict[str, object], message: str) -> None:
    document = {**json.loads(STANDARD.to_json()), **change}
    with pytest.raises(ValueError, match=message):
        Scenario.from_json(json.dumps(document))


LOCUSTFILE_TASKS = """
import collections, json, sys
sys.path.insert(0, "loadtests")
import locustfile
print(json.dumps({
    cls.__name__: collections.Counter(t.__name__ for t in cls.tasks)
    for cls in (locustfile.SalesRep, locustfile.Manager, locustfile.FeedViewer)
}))
"""


def locustfile_tasks(scenario: str) -> dict[str, dict[str, int]]:
    """The task weights Locust would draw from, read from the locustfile as Locust imports
    it (in a child: importing Locust patches the process with gevent)."""
    done = subprocess.run(
        [sys.executable, "-c", LOCUSTFILE_TASKS],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "SIXTY_LOAD_SCENARIO": scenario},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    tasks: dict[str, dict[str, int]] = json.loads(done.stdout.strip().splitlines()[-1])
    return tasks


def test_task_weights_reweigh_the_locustfile_tasks_they_name_and_only_those() -> None:
    standard, steady = locustfile_tasks("standard"), locustfile_tasks(STEADY_DATA.name)
    assert {name: tuple(tasks) for name, tasks in standard.items()} == USER_TASKS
    assert standard["SalesRep"]["create_deal"] > standard["SalesRep"]["delete_own_deal"]
    assert steady["SalesRep"] == {**standard["SalesRep"], "create_deal": 2, "delete_own_deal": 3}
    assert steady["Manager"] == standard["Manager"]


def test_the_client_follows_the_profile() -> None:
    assert client_for_profile("legacy") == "legacy"
    assert client_for_profile("legacy+session_cache") == "legacy"
    assert client_for_profile("optimized-no-query_cache") == "optimized"


# --- probes --------------------------------------------------------------------------

METRICS = """\
# TYPE sixty_info gauge
sixty_info{profile="optimized"} 1.0
# TYPE sixty_cache_hits counter
sixty_cache_hits_total{namespace="stages"} %(hits)s
sixty_cache_hits_total{namespace="sessions"} 10.0
# TYPE sixty_cache_misses counter
sixty_cache_misses_total{namespace="stages"} 2.0
# TYPE sixty_pool_busy_connection_seconds counter
sixty_pool_busy_connection_seconds_total %(busy)s
# TYPE sixty_pool_open_connection_seconds counter
sixty_pool_open_connection_seconds_total %(open)s
# TYPE sixty_pool_waiting gauge
sixty_pool_waiting 0.0
"""


def test_the_probe_reads_profile_and_series() -> None:
    profile, series = parse_metrics(METRICS % {"hits": 5, "busy": 1, "open": 10})
    assert profile == "optimized"
    assert series["cache_hits_total{stages}"] == 5
    assert series["pool_waiting"] == 0


def test_run_figures_are_deltas_between_first_and_last_scrape() -> None:
    first = parse_metrics(METRICS % {"hits": 5, "busy": 1, "open": 10})[1]
    last = parse_metrics(METRICS % {"hits": 35, "busy": 4, "open": 40})[1]
    figures = run_figures([ProbeSample(0, 100 * 2**20, first), ProbeSample(1, 150 * 2**20, last)])
    # 30 new hits, 0 new misses: the hits before the run do not count.
    assert figures.cache_hits == 30 and figures.cache_misses == 0
    assert figures.cache_hit_rate == 1.0
    assert figures.pool_efficiency == pytest.approx(3 / 30)
    assert figures.max_rss_sampled_mb == 150
    assert run_figures([]).cache_hit_rate is None
    assert figures.cyclic_garbage_per_1k_requests is None  # the service did not say


def test_cyclic_garbage_is_counted_per_thousand_requests_served() -> None:
    def scrape(t: float, served: int, collected: int) -> ProbeSample:
        text = (
            "# TYPE sixty_http_requests counter\n"
            f'sixty_http_requests_total{{endpoint="GET /api/stages"}} {served}\n'
            "# TYPE sixty_gc_collected_objects counter\n"
            f"sixty_gc_collected_objects_total {collected}\n"
        )
        return ProbeSample(t, None, parse_metrics(text)[1])

    figures = run_figures([scrape(0, 100, 5_000), scrape(1, 2_100, 9_000)])
    assert figures.cyclic_garbage_per_1k_requests == pytest.approx(4_000 / 2_000 * 1000)
