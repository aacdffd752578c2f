"""Real Locust runs on 127.0.0.1 against real services and an embedded Postgres: the
samples, their exact percentiles, contract failures with their reasons, duplicates seen
in the database, a master with two workers, ``--host`` and plain Locust."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from sixty_core.cli import main
from sixty_core.harness.servers import free_port
from sixty_core.load import result as load_result
from sixty_core.load.samples import read_dir
from sixty_core.load.scenario import STANDARD, EdgeFaultProfile, Scenario

REPO = Path(__file__).resolve().parents[1]
LEGACY_CREATE = "contract: error is set on a 201: 'Deal created successfully'"

#: Small and quick, and without edge faults, so every duplicate is one a client saw.
QUICK = Scenario(
    name="test",
    version=1,
    users=6,
    spawn_rate=6,
    duration_s=4,
    weights={"SalesRep": 4, "Manager": 1, "FeedViewer": 1},
    think_s=(0.05, 0.2),
    feed_dwell_s=(0.2, 1.0),
    seed_scale=1,
    seed=42,
    time_scale=0.1,
    edge=EdgeFaultProfile(latency_ms_median=5, failure_rate=0, hang_probability=0),
)


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "quick.json"
    path.write_bytes(QUICK.to_json())
    return path


def run_load(out: Path, *args: str) -> load_result.LoadResult:
    assert main(["load", *args, "--out", str(out)]) == 0
    return load_result.read(out / "load.json")


@pytest.fixture(scope="module")
def legacy_run(
    tmp_path_factory: pytest.TempPathFactory, scenario_file: Path
) -> tuple[Path, load_result.LoadResult]:
    out = tmp_path_factory.mktemp("legacy") / "run"
    return out, run_load(out, "--profile", "legacy", "--scenario", str(scenario_file))


@pytest.fixture(scope="module")
def optimized_run(
    tmp_path_factory: pytest.TempPathFactory, scenario_file: Path
) -> tuple[Path, load_result.LoadResult]:
    out = tmp_path_factory.mktemp("optimized") / "run"
    return out, run_load(out, "--profile", "optimized", "--scenario", str(scenario_file))


def test_every_request_is_a_sample_and_locust_agrees(
    legacy_run: tuple[Path, load_result.LoadResult],
) -> None:
    out, outcome = legacy_run
    merged = read_dir(out / "samples")
    assert outcome.samples.count == len(merged.samples) > 50
    assert outcome.samples.locust_total == len(merged.samples)
    assert outcome.samples.matches_locust is True
    for name in ("locust_stats.csv", "locust.html", "timeseries.jsonl"):
        assert (out / name).stat().st_size > 0
    assert outcome.probe_samples >= 4  # 2 Hz over a 4 s run, plus first and last


def test_percentiles_are_computed_exactly_from_the_samples(
    legacy_run: tuple[Path, load_result.LoadResult],
) -> None:
    out, outcome = legacy_run
    merged = read_dir(out / "samples").samples
    for endpoint in outcome.endpoints:
        latencies = [s.ms for s in merged if s.name == endpoint.name and s.kind != "ACTION"]
        assert endpoint.requests == len(latencies)
        assert endpoint.p50_ms is not None and endpoint.p99_ms is not None
        assert endpoint.p50_ms.value == pytest.approx(float(np.percentile(latencies, 50)))
        assert endpoint.p99_ms.value == pytest.approx(float(np.percentile(latencies, 99)))
        assert endpoint.p99_ms.value <= max(latencies)


def test_legacy_creates_break_the_contract_and_make_duplicates(
    legacy_run: tuple[Path, load_result.LoadResult],
) -> None:
    out, outcome = legacy_run
    merged = read_dir(out / "samples").samples
    creates = [s for s in merged if s.name == "POST /api/deals"]
    assert creates and all(s.reason == LEGACY_CREATE for s in creates)
    assert outcome.failure_reasons[LEGACY_CREATE] == len(creates)
    assert outcome.contract_violations == len(creates)
    # Each broken create is followed by the client's fallback insert: a second row, which
    # the database saw too.
    fallbacks = [s for s in merged if s.name == "POST /api/deals (fallback insert)" and s.ok]
    assert 0 < outcome.duplicates_created <= len(fallbacks)
    # The run's end can stop a user between its fallback insert and the end of the create
    # action that counts it: at most one such action per user.
    assert len(fallbacks) - outcome.duplicates_created <= outcome.scenario.users
    # (A row deleted before the watcher read its name cannot be attributed; say so.)
    assert outcome.inserted_unnamed is not None
    assert outcome.duplicates_in_db is not None
    # Every duplicate row comes from a fallback insert that succeeded; one whose create
    # action the run's end cut short is in the database but not counted by its client.
    assert (
        outcome.duplicates_created - outcome.inserted_unnamed
        <= outcome.duplicates_in_db
        <= len(fallbacks)
    )
    assert outcome.client == "legacy" and outcome.profile == "legacy"
    assert outcome.service.cache_hits in (0, None)


def test_optimized_keeps_the_contract(
    optimized_run: tuple[Path, load_result.LoadResult],
) -> None:
    _, outcome = optimized_run
    assert outcome.contract_violations == 0
    assert not [r for r in outcome.failure_reasons if r.startswith("contract:")]
    assert outcome.duplicates_created == 0 and outcome.duplicates_in_db == 0
    assert outcome.deal_create is not None and outcome.deal_create.requests > 0
    assert outcome.service.cache_hit_rate is not None and outcome.service.cache_hit_rate > 0
    assert outcome.peak_rss.source == "VmHWM" and (outcome.peak_rss.mb or 0) > 10
    assert outcome.service.pool_efficiency is not None


def test_the_database_counts_the_rows_the_run_added_and_removed(
    optimized_run: tuple[Path, load_result.LoadResult],
) -> None:
    """The data's growth over the run (what cached lists and the RSS grow with) comes from
    the database's change feed: every create and delete the clients saw succeed is there,
    plus at most one per user that the run's end cut off before its client heard back."""
    out, outcome = optimized_run
    merged = read_dir(out / "samples").samples

    def succeeded(name: str) -> int:
        return sum(1 for s in merged if s.name == name and s.kind != "ACTION" and s.ok)

    creates, deletes = succeeded("POST /api/deals"), succeeded("DELETE /api/deals/{id}")
    assert creates > 0 and outcome.deals_inserted is not None and outcome.deals_deleted is not None
    assert creates <= outcome.deals_inserted <= creates + outcome.scenario.users
    assert deletes <= outcome.deals_deleted <= deletes + outcome.scenario.users


def test_two_workers_write_their_own_samples_and_the_merge_adds_up(
    tmp_path: Path, scenario_file: Path
) -> None:
    out = tmp_path / "run"
    outcome = run_load(
        out, "--profile", "optimized", "--scenario", str(scenario_file), "--workers", "2"
    )
    assert len(outcome.samples.files) == 2
    assert outcome.samples.matches_locust is True and outcome.samples.count > 20
    assert outcome.workers == 2


def worker_env_file(path: Path) -> dict[str, str]:
    """The ``KEY='value'`` lines of a ``worker.env`` as the shell would read them."""
    env = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        (env[key],) = shlex.split(value)
    return env


# About 18 s: in `make test-slow` (and .ci/run), to keep `make test` inside its 15 minutes;
# `make test` still runs two harness-started workers merging their samples (above).
@pytest.mark.slow
def test_a_worker_started_elsewhere_joins_a_steps_run(tmp_path: Path, scenario_file: Path) -> None:
    """``--remote-workers``: the master waits on its bind address for a worker the
    harness did not start (here a process on loopback started from ``worker.env``, as
    on another machine), and the worker's samples count with Locust's total."""
    out, port = tmp_path / "run", free_port()
    command = [sys.executable, "-m", "sixty_core", "load", "--profile", "optimized"]
    command += ["--scenario", str(scenario_file), "--shape", "steps", "--steps", "2,4"]
    command += ["--duration", "6", "--remote-workers", "1", "--out", str(out)]
    command += ["--master-bind", f"127.0.0.1:{port}"]
    harness = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    worker = None
    try:
        deadline = time.monotonic() + 90
        while not (out / "worker.env").exists():
            assert harness.poll() is None, harness.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "no worker.env within 90 s"
            time.sleep(0.2)
        time.sleep(0.2)  # one write_text call; let it finish before reading
        env = {**os.environ, **worker_env_file(out / "worker.env")}
        env["SIXTY_LOAD_SAMPLES_DIR"] = str(out / "samples")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                "loadtests/locustfile.py",
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        output = harness.communicate(timeout=150)[0].decode(errors="replace")
    finally:
        for process in (harness, worker):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
    assert harness.returncode == 0, output[-3000:]
    assert "remote worker" in output and "--master-port" in output
    outcome = load_result.read(out / "load.json")
    assert outcome.workers == 1 and outcome.shape == "steps"
    assert len(outcome.samples.files) == 1 and outcome.samples.matches_locust is True
    assert outcome.samples.count > 10


@pytest.fixture(scope="module")
def served_legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running ``sixty serve --profile legacy`` (seed scale 1), stopped afterwards."""
    port = free_port()
    tokens = tmp_path_factory.mktemp("serve") / "tokens.json"
    command = [sys.executable, "-m", "sixty_core", "serve", "--profile", "legacy"]
    command += ["--port", str(port), "--seed-scale", "1", "--tokens-file", str(tokens)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, "sixty serve exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("sixty serve did not answer within 90 s")
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_load_against_a_running_service(
    served_legacy: str, tmp_path: Path, scenario_file: Path
) -> None:
    outcome = run_load(tmp_path / "run", "--host", served_legacy, "--scenario", str(scenario_file))
    assert outcome.target == served_legacy and outcome.profile == "legacy"
    assert outcome.client == "legacy"
    assert outcome.failure_reasons.get(LEGACY_CREATE, 0) > 0
    assert outcome.peak_rss.source == "sampled /metrics" and outcome.peak_rss.mb
    assert outcome.duplicates_in_db is None  # no database access from outside
    assert outcome.deals_inserted is None and outcome.deals_deleted is None


def test_plain_locust_with_the_shipped_config(served_legacy: str, tmp_path: Path) -> None:
    """``locust -f loadtests/locustfile.py --config loadtests/locust.conf`` works as is:
    the client is told by the service's /metrics, and the samples hook writes."""
    samples = tmp_path / "samples"
    command = [sys.executable, "-m", "locust", "--config", "loadtests/locust.conf"]
    command += ["--headless", "--host", served_legacy, "-u", "3", "-r", "3", "-t", "3s"]
    command += ["--sixty-samples-dir", str(samples), "--sixty-seed-scale", "1"]
    command += ["--json-file", str(tmp_path / "plain")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=60, check=False)
    assert done.returncode in (0, 1), done.stderr.decode()[-2000:]
    merged = read_dir(samples).samples
    # Locust's --json-file is written after its users stopped: it has every request.
    total = sum(e["num_requests"] for e in json.loads((tmp_path / "plain.json").read_text()))
    assert len(merged) == total > 0
    assert any(s.name == "POST /api/deals (fallback insert)" for s in merged) or all(
        s.name != "POST /api/deals" for s in merged
    )


# --- bad input -------------------------------------------------------------------------


def failing(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["load", *args]) == 1
    return capsys.readouterr().err


def test_an_unreachable_host_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    err = failing(capsys, "--host", url, "--out", str(tmp_path / "o"))
    assert f"cannot reach {url}" in err and "sixty serve" in err
    assert not (tmp_path / "o").exists()


@pytest.fixture
def not_the_api() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_host_that_does_not_speak_the_api(
    capsys: pytest.CaptureFixture[str], not_the_api: str, tmp_path: Path
) -> None:
    err = failing(capsys, "--host", not_the_api, "--out", str(tmp_path / "o"))
    assert "does not speak the sixty deal API" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0"], "--users must be between 1 and 10000, got 0"),
        (["--duration", "-5"], "--duration must be between 1 and 86400 seconds, got -5"),
        (["--spawn-rate", "0"], "--spawn-rate must be above 0"),
        (["--workers", "-1"], "--workers must be between 0 and 64"),
        (["--profile", "fastest"], "unknown profile 'fastest'"),
        (["--scenario", "huge"], "unknown scenario 'huge'"),
        (["--scenario", "missing.json"], "cannot read scenario file missing.json"),
        (["--seed-scale", "2"], "use them with --host"),
        (["--host", "http://127.0.0.1:9", "--memray"], "not with --host"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    err = failing(capsys, *args, "--out", str(tmp_path / "o"))
    assert message in err
    assert not (tmp_path / "o").exists()


def test_an_unknown_shape_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["load", "--shape", "wave"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'wave'" in capsys.readouterr().err


def test_a_run_never_writes_into_a_used_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scenario_file: Path
) -> None:
    (tmp_path / "old.txt").write_text("kept")
    err = failing(capsys, "--scenario", str(scenario_file), "--out", str(tmp_path))
    assert "is not empty" in err
    assert (tmp_path / "old.txt").read_text() == "kept"


def test_a_malformed_scenario_file_names_the_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**json.loads(STANDARD.to_json()), "users": "many"}))
    err = failing(capsys, "--scenario", str(path), "--out", str(tmp_path / "o"))
    assert "bad.json" in err and "users" in err


def test_a_traced_load_run_reports_the_heap_peak_and_who_holds_it(
    tmp_path: Path, scenario_file: Path
) -> None:
    outcome = run_load(
        tmp_path / "run", "--profile", "optimized", "--scenario", str(scenario_file), "--memray"
    )
    assert outcome.memray is not None and outcome.memray.peak_heap_mb > 1
    assert outcome.memray.at_peak and outcome.memray.at_peak[0].bytes > 0
    assert outcome.peak_rss.source == "VmHWM, traced by memray"
    assert outcome.service.rss_slope_mb_per_10k_requests is None
