"""``sixty ceiling``: the hot endpoints' throughput from outside, beside the stack's limits.

Each endpoint is loaded with ``wrk`` over loopback (HTTP/1.1 keep-alive, N connections)
against real server processes: the service in legacy, optimized and
``optimized-no-query_cache``, and the bare limits (a Starlette hello and a Starlette +
asyncpg primary-key lookup) under the service's own uvicorn configuration. Sides are run in
alternating order round after round, so drift on the shared machine hits all alike; every
ratio is the median of per-round ratios with a bootstrap interval, and is checked against
the hot-path targets of the benchmark issue. Locust cannot saturate the service; wrk can.

Beside each throughput, the server process's CPU time per request it answered (user +
system, read with psutil around each wrk run) gives the ratios a second way, from that
process's CPU alone (Postgres's work is not in it). The two agree when the server process
is the bottleneck (its rate times its CPU per request is then close to one core); where
they part, the run measured something else as well (wrk, Postgres, the host's steal).
The targets are checked on throughput, as the issue states them.

A check's verdict follows its interval, not its median alone (:func:`verdict`): ``met`` or
``not met`` when the whole interval is on one side of the target, ``inconclusive`` when it
straddles it (the run cannot tell on this machine; more rounds narrow the interval). Below
3 rounds there is no interval and the median decides.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

import sixty_core
from sixty_core.benchkit.interleave import bootstrap_median_interval
from sixty_core.errors import SixtyError
from sixty_core.harness import fingerprint, flamegraphs, rundir
from sixty_core.harness.servers import (
    Supervisor,
    free_port,
    spawn_server,
    stop_processes,
    wait_answering,
)
from sixty_core.tokens import derive_token

#: wrk's own thread count; the machine has two cores and the servers need them too.
WRK_THREADS = 2
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_REQUESTS = re.compile(r"(\d+) requests in")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors:.*")


class CeilingError(SixtyError):
    """wrk is missing, a server did not start, or a run answered errors."""


@dataclass(frozen=True)
class Side:
    label: str
    server: str  # a key of the running servers
    path: str
    auth: bool = True


@dataclass(frozen=True)
class Check:
    """``throughput(faster) / throughput(slower)`` compared with ``limit``: a cost ratio
    ``hello / optimized <= 1.6`` or a speed-up ``optimized / legacy >= 5``."""

    numerator: str
    denominator: str
    op: str  # "<=" or ">="
    limit: float
    meaning: str


@dataclass(frozen=True)
class Endpoint:
    name: str
    sides: tuple[Side, ...]
    checks: tuple[Check, ...]


def _cached(name: str, path: str, cost_limit: float | None) -> Endpoint:
    sides = [Side("legacy", "legacy", path), Side("optimized", "optimized", path)]
    checks = [Check("optimized", "legacy", ">=", 5.0, "speed-up over legacy")]
    if cost_limit is not None:
        sides.append(Side("hello", "hello", "/hello", auth=False))
        checks.append(Check("hello", "optimized", "<=", cost_limit, "cost over bare hello"))
    return Endpoint(name, tuple(sides), tuple(checks))


ENDPOINTS: tuple[Endpoint, ...] = (
    _cached("GET /api/stages", "/api/stages", 1.6),
    _cached("GET /api/deals?limit=50", "/api/deals?limit=50", 3.0),
    _cached("GET /api/deals/{id}", "/api/deals/{id}", 2.0),
    _cached("GET /api/deals/pipeline-stats", "/api/deals/pipeline-stats", None),
    _cached("GET /api/owners", "/api/owners", None),
    _cached("GET /api/companies", "/api/companies", None),
    Endpoint(
        "GET /api/deals/{id} uncached",
        (
            Side("optimized-no-query_cache", "optimized-no-query_cache", "/api/deals/{id}"),
            Side("bare_pk_lookup", "pk", "/deals/{id}", auth=False),
        ),
        (
            Check(
                "optimized-no-query_cache",
                "bare_pk_lookup",
                ">=",
                0.7,
                "share of the bare lookup's throughput",
            ),
        ),
    ),
)


@dataclass
class Options:
    dsn: str
    token: str
    duration_s: float = 5.0
    rounds: int = 5
    connections: int = 32
    keyword: str | None = None
    #: Where to write a py-spy flame graph of each side (one unmeasured run each).
    flamegraphs: Path | None = None


@dataclass
class Result:
    endpoint: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    #: Per side and round: the server process's CPU µs per request it answered.
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: Side -> its flame graph's file name, when ``Options.flamegraphs`` was given.
    flamegraphs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WrkRun:
    rate: float  # requests per second
    requests: int  # requests completed


@dataclass(frozen=True)
class Running:
    """A started server: where it answers, and its process (for its CPU time)."""

    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far; CeilingError if it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error as exc:
        raise CeilingError(f"server process {pid} is gone ({exc}): see its log above") from None
    return float(times.user + times.system)


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise CeilingError(
            "wrk is not installed: it is the Debian package 'wrk' (apt-get install wrk)"
        )
    return found


def run_wrk(url: str, *, token: str | None, duration_s: float, connections: int) -> WrkRun:
    """One wrk run's rate and request count; CeilingError if any answer was not 2xx."""
    command = [
        wrk_path(),
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "10s",
    ]
    if token is not None:
        command += ["-H", f"Authorization: Bearer {token}"]
    command.append(url)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + 30, check=False
        )
    except subprocess.TimeoutExpired:
        raise CeilingError(
            f"wrk against {url} did not finish within {duration_s + 30:.0f} s"
        ) from None
    if done.returncode != 0:
        raise CeilingError(f"wrk against {url} failed: {done.stderr.strip() or done.stdout}")
    rate = _RATE.search(done.stdout)
    requests = _REQUESTS.search(done.stdout)
    if rate is None or requests is None:
        raise CeilingError(f"wrk printed no rate for {url}:\n{done.stdout}")
    bad = _NON_2XX.search(done.stdout)
    if bad is not None and int(bad.group(1)) > 0:
        raise CeilingError(f"{url} answered {bad.group(1)} non-2xx responses under load")
    errors = _SOCKET_ERRORS.search(done.stdout)
    if errors is not None and re.search(r"(connect|read|write|timeout) [1-9]", errors.group(0)):
        raise CeilingError(f"{url}: {errors.group(0)}")
    return WrkRun(float(rate.group(1)), int(requests.group(1)))


class BareServer:
    """A bare limit in its own process (``servers bare``), stopped with SIGINT."""

    def __init__(self, app: str, dsn: str, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = log_dir / f"bare-{app}.log"
        self.process = spawn_server(
            ["bare", "--app", app, "--dsn", dsn, "--port", str(self.port)], log
        )
        # The lookup answers 404 for an unknown id: enough to know it serves.
        probe = "/hello" if app == "hello" else "/deals/00000000-0000-4000-8000-000000000000"
        try:
            wait_answering(f"bare {app}", self.process, self.url + probe, log, 60, ok=(200, 404))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_processes([self.process])


@contextlib.contextmanager
def servers(dsn: str, needed: set[str]) -> Iterator[dict[str, Running]]:
    """Start the servers ``needed`` (profiles, ``hello``, ``pk``); yield name -> server."""
    log_dir = Path(tempfile.mkdtemp(prefix="sixty-ceiling-"))
    supervisors: list[Supervisor] = []
    bare: list[BareServer] = []
    running: dict[str, Running] = {}
    try:
        for name in sorted(needed):
            if name in ("hello", "pk"):
                server = BareServer(name, dsn, log_dir)
                bare.append(server)
                running[name] = Running(server.url, server.process.pid)
            else:
                supervisor = Supervisor(dsn, name, log_dir=log_dir / name)
                (log_dir / name).mkdir()
                supervisors.append(supervisor)
                supervisor.start()
                running[name] = Running(supervisor.service_url, supervisor.processes["service"].pid)
        yield running
    finally:
        for supervisor in supervisors:
            supervisor.stop()
        for server in bare:
            server.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


def _deal_id(url: str, token: str) -> str:
    response = httpx.get(
        f"{url}/api/deals?limit=1", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    deal_id: str = response.json()["data"][0]["id"]
    return deal_id


#: A check's verdicts as the table shows them, in the order the summary counts them.
_VERDICT_TEXT = {
    "met": Text("met", style="green"),
    "inconclusive": Text("inconclusive", style="yellow"),
    "not met": Text("NOT met", style="red"),
}


def verdict(value: float, low: float | None, high: float | None, op: str, limit: float) -> str:
    """``met`` / ``not met`` when the interval ``[low, high]`` lies wholly on one side of
    ``limit`` (``op`` is ``"<="`` or ``">="``, what the value must be), ``inconclusive`` when it
    straddles it; without an interval (None bounds) the median ``value`` decides. A value
    exactly at the limit meets it."""
    if op not in ("<=", ">="):
        raise ValueError(f"op must be '<=' or '>=', got {op!r}")
    at_most = op == "<="
    if low is None or high is None:
        low = high = value
    if (high <= limit) if at_most else (low >= limit):
        return "met"
    if (low > limit) if at_most else (high < limit):
        return "not met"
    return "inconclusive"


def _tally_verdicts(results: list[Result]) -> dict[str, int]:
    """How many checks of ``results`` had each verdict (every verdict present, maybe 0)."""
    counts = dict.fromkeys(_VERDICT_TEXT, 0)
    for result in results:
        for check in result.checks:
            counts[check["verdict"]] += 1
    return counts


#: A median ratio and its 95% interval (None bounds below 3 rounds).
MedianRatio = tuple[float, float | None, float | None]


def _median_ratio(tops: list[float], bottoms: list[float]) -> MedianRatio | None:
    """Median of the per-round ratios ``top / bottom`` and its 95% bootstrap interval;
    None when no round has a ``bottom`` above zero (psutil counts CPU in 10 ms ticks, so a
    very short run can read none)."""
    per_round = [a / b for a, b in zip(tops, bottoms, strict=True) if b > 0]
    if not per_round:
        return None
    low, high = bootstrap_median_interval(per_round)
    return statistics.median(per_round), low, high


def judge(result: Result, check: Check) -> dict[str, Any]:
    """``check`` on ``result``'s rounds: its ratio by rate and by CPU, each with its
    interval, and the verdict (CeilingError when the denominator never answered)."""
    by_rate = _median_ratio(result.rates[check.numerator], result.rates[check.denominator])
    if by_rate is None:
        raise CeilingError(
            f"{result.endpoint}: {check.denominator} answered no request in any round"
        )
    value, low, high = by_rate
    # The same ratio from CPU per request: a rate ratio a/b is a cost ratio b/a.
    cpu, cpu_low, cpu_high = _median_ratio(
        result.cpu_us[check.denominator], result.cpu_us[check.numerator]
    ) or (None, None, None)
    return {
        **asdict(check),
        "ratio": value,
        "low": low,
        "high": high,
        # The median alone on the target's side (kept for readers of earlier files).
        "met": verdict(value, None, None, check.op, check.limit) == "met",
        "verdict": verdict(value, low, high, check.op, check.limit),
        "cpu_ratio": cpu,
        "cpu_low": cpu_low,
        "cpu_high": cpu_high,
    }


def endpoints_matching(keyword: str | None) -> list[Endpoint]:
    """The endpoints whose name contains ``keyword`` (all without one); CeilingError naming
    them all when none does."""
    chosen = [e for e in ENDPOINTS if not keyword or keyword in e.name]
    if not chosen:
        names = ", ".join(repr(e.name) for e in ENDPOINTS)
        raise CeilingError(f"no endpoint matches -k {keyword!r}; the endpoints are {names}")
    return chosen


def measure(options: Options, console: Console) -> list[Result]:
    """Run every selected endpoint's sides in alternating rounds; return the results. With
    ``options.flamegraphs``, each distinct side is first recorded once by py-spy, before
    any round (:func:`record_flamegraph`)."""
    wrk_path()
    if options.flamegraphs is not None:
        flamegraphs.py_spy_path()  # missing: say so before anything starts
    chosen = endpoints_matching(options.keyword)
    needed = {side.server for endpoint in chosen for side in endpoint.sides}
    distinct = {(side.label, side.path): side for endpoint in chosen for side in endpoint.sides}
    recorded: dict[tuple[str, str], str] = {}
    results: list[Result] = []
    with servers(options.dsn, needed) as running:
        service = running.get("optimized") or running.get("optimized-no-query_cache")
        deal_id = _deal_id(service.url, options.token) if service else ""
        runs = sum(len(e.sides) for e in chosen) * (options.rounds + 1)
        runs += len(distinct) if options.flamegraphs is not None else 0
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("wrk", total=runs)
            # First, so a py-spy that cannot trace stops the run before anything is measured.
            if options.flamegraphs is not None:
                for key, side in distinct.items():
                    bar.update(task, description=f"py-spy: {side.label} {side.path}")
                    server = running[side.server]
                    svg = record_flamegraph(side, server, deal_id, options.flamegraphs, options)
                    recorded[key] = svg.name
                    bar.advance(task)
            for endpoint in chosen:
                result = Result(
                    endpoint.name,
                    {side.label: [] for side in endpoint.sides},
                    {side.label: [] for side in endpoint.sides},
                )
                sides = list(endpoint.sides)
                for round_no in range(options.rounds + 1):  # round 0 warms and is dropped
                    order = sides if round_no % 2 == 0 else list(reversed(sides))
                    for side in order:
                        server = running[side.server]
                        url = side_url(server, side, deal_id)
                        bar.update(task, description=f"{endpoint.name}: {side.label}")
                        cpu_before = cpu_seconds(server.pid)
                        run = run_wrk(
                            url,
                            token=options.token if side.auth else None,
                            duration_s=1.0 if round_no == 0 else options.duration_s,
                            connections=options.connections,
                        )
                        cpu_s = cpu_seconds(server.pid) - cpu_before
                        if round_no:
                            result.rates[side.label].append(run.rate)
                            result.cpu_us[side.label].append(cpu_s / max(run.requests, 1) * 1e6)
                        bar.advance(task)
                result.flamegraphs = {
                    side.label: recorded[side.label, side.path]
                    for side in sides
                    if (side.label, side.path) in recorded
                }
                result.checks = [judge(result, check) for check in endpoint.checks]
                results.append(result)
    return results


def side_url(server: Running, side: Side, deal_id: str) -> str:
    return server.url + side.path.replace("{id}", deal_id)


def record_flamegraph(
    side: Side, server: Running, deal_id: str, folder: Path, options: Options
) -> Path:
    """A short warm-up, then one unmeasured wrk run of ``side`` with py-spy sampling its
    ``server`` into an SVG in ``folder``; the SVG's path. wrk runs a second longer than
    py-spy samples, so every sample is taken under load."""
    url = side_url(server, side, deal_id)
    token = options.token if side.auth else None
    run_wrk(url, token=token, duration_s=1.0, connections=options.connections)
    svg = folder / flamegraphs.svg_name(side.label, side.path)
    recording = flamegraphs.start(server.pid, svg, duration_s=options.duration_s)
    try:
        run_wrk(
            url,
            token=token,
            duration_s=math.ceil(options.duration_s) + 1,
            connections=options.connections,
        )
    except BaseException:
        recording.kill()
        recording.wait()
        raise
    flamegraphs.finish(recording, svg, timeout_s=flamegraphs.WRITE_TIMEOUT_S)
    return svg


def table(results: list[Result]) -> Table:
    view = Table(title="sixty ceiling (wrk, loopback)", show_edge=False, header_style="bold")
    view.add_column("endpoint / side")
    view.add_column("req/s (median)", justify="right")
    view.add_column("CPU µs/req", justify="right")
    view.add_column("target")
    view.add_column("measured [95% CI]")
    view.add_column("")
    view.add_column("by CPU [95% CI]")
    for result in results:
        if view.row_count:
            view.add_section()
        view.add_row(Text(result.endpoint, style="bold"))
        for label, rates in result.rates.items():
            view.add_row(
                Text(f"  {label}"),
                f"{statistics.median(rates):,.0f}",
                f"{statistics.median(result.cpu_us[label]):,.0f}",
            )
        for check in result.checks:
            view.add_row(
                Text(f"  {check['numerator']}/{check['denominator']}"),
                "",
                "",
                f"{check['meaning']} {check['op']} {check['limit']:g}",
                _with_interval(check["ratio"], check["low"], check["high"]),
                _VERDICT_TEXT[check["verdict"]],
                _with_interval(check["cpu_ratio"], check["cpu_low"], check["cpu_high"]),
            )
    return view


def summary(results: list[Result], rounds: int) -> str:
    """One line under the table: the verdicts counted, and what to do about inconclusive ones."""
    counts = _tally_verdicts(results)
    line = ", ".join(f"{n} {name}" for name, n in counts.items())
    if counts["inconclusive"]:
        line += (
            f" (inconclusive: the 95% interval straddles the target; more rounds than {rounds} "
            "narrow it, a quieter machine more)"
        )
    return f"targets: {line}"


def show(
    console: Console, results: list[Result], rounds: int, cpu: Mapping[str, float] | None
) -> None:
    """Print a run: the table, its verdicts counted, and the CPU the host took during it
    (:func:`cpu_during`; a file written before it was recorded has none)."""
    console.print(table(results))
    console.print(summary(results, rounds))
    if cpu is not None:
        console.print(cpu_line(cpu))


def _with_interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None else "")


#: ``psutil.cpu_times()`` fields already counted in ``user``/``nice`` on Linux.
_GUEST_FIELDS = frozenset({"guest", "guest_nice"})


def cpu_during(before: Any, after: Any) -> dict[str, float]:
    """Shares of the machine's CPU time between two ``psutil.cpu_times()`` readings:
    ``steal`` (taken by the host: a run that loses much of it measures noisily) and
    ``idle``. Fields a platform lacks count as zero."""
    spent = {
        name: getattr(after, name) - getattr(before, name)
        for name in after._fields
        if name not in _GUEST_FIELDS
    }
    total = sum(spent.values())
    if total <= 0:
        return {"steal": 0.0, "idle": 0.0}
    return {"steal": spent.get("steal", 0.0) / total, "idle": spent.get("idle", 0.0) / total}


def cpu_line(shares: Mapping[str, float]) -> str:
    """The CPU shares of :func:`cpu_during` as one sentence."""
    return (
        f"During the run the host stole {shares['steal']:.1%} of the CPU time and "
        f"{shares['idle']:.1%} was idle."
    )


#: What ``--out`` holds after a run.
JSON_NAME, MARKDOWN_NAME = "ceiling.json", "ceiling.md"


def write(results: list[Result], options: Options, folder: Path, cpu: Mapping[str, float]) -> Path:
    """Write ``ceiling.json`` (every round's figures) and ``ceiling.md`` (the table and the
    verdicts) into ``folder``, each whole, the JSON last (a write that fails leaves no
    ``ceiling.json`` of this run); return the JSON's path. The commit, the machine and
    ``cpu`` (:func:`cpu_during` the run) are recorded with them: a ratio means something
    only beside what was measured, and where."""
    commit, dirty = fingerprint.git_state(sixty_core.SOURCE_ROOT)
    data = {
        "tool": "wrk",
        "threads": WRK_THREADS,
        "connections": options.connections,
        "duration_s": options.duration_s,
        "rounds": options.rounds,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "cores": os.cpu_count() or 0,
        "cpu_model": fingerprint.cpu_model(),
        "cpu_during_run": dict(cpu),
        "results": [asdict(r) for r in results],
    }
    # The JSON is renamed into place last: a failure on the way leaves no record of a run.
    rundir.write_whole(
        {
            folder / MARKDOWN_NAME: markdown(results, data),
            folder / JSON_NAME: json.dumps(data, indent=2) + "\n",
        }
    )
    return folder / JSON_NAME


def load(path: Path) -> tuple[list[Result], dict[str, Any]]:
    """The results and the settings of a ``ceiling.json`` (SixtyError when it is not one)."""
    try:
        data = json.loads(path.read_text())
        results = [Result(**item) for item in data["results"]]
        markdown(results, data)  # reads every figure the table shows: a bad one fails here
    except OSError as exc:
        raise SixtyError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError):
        raise SixtyError(f"{path}: not a ceiling.json written by sixty ceiling") from None
    return results, data


def markdown(results: list[Result], settings: Mapping[str, Any]) -> str:
    """The run as a Markdown page: how it was measured, then per endpoint each side's rate
    and CPU per request, and each check with its interval and verdict."""
    commit = str(settings.get("git_commit", "unknown"))[:12]
    lines = [
        "# sixty ceiling",
        "",
        f"wrk over loopback, {settings['threads']} threads, {settings['connections']} "
        f"connections, {settings['rounds']} rounds of {settings['duration_s']:g} s, sides "
        f"alternating; commit `{commit}`"
        + (" (with uncommitted changes)" if settings.get("git_dirty") else "")
        + f", {settings.get('cores', '?')} cores ({settings.get('cpu_model', 'unknown')}), "
        f"{settings.get('created_at', 'time unknown')}."
        + (f" {cpu_line(settings['cpu_during_run'])}" if "cpu_during_run" in settings else ""),
        "",
        "Each ratio is the median of per-round ratios with its 95% bootstrap interval; a "
        "target is met or not met when the whole interval is on one side of it, "
        "inconclusive when it straddles it.",
        "",
        "| endpoint / side | req/s (median) | CPU µs/req | target | measured [95% CI] | "
        "verdict | by CPU [95% CI] |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for result in results:
        lines.append(f"| **{result.endpoint}** | | | | | | |")
        for label, rates in result.rates.items():
            lines.append(
                f"| {label} | {statistics.median(rates):,.0f} | "
                f"{statistics.median(result.cpu_us[label]):,.0f} | | | | |"
            )
        for check in result.checks:
            lines.append(
                f"| {check['numerator']}/{check['denominator']} | | | "
                f"{check['meaning']} {check['op']} {check['limit']:g} | "
                f"{_with_interval(check['ratio'], check['low'], check['high'])} | "
                f"**{check['verdict']}** | "
                f"{_with_interval(check['cpu_ratio'], check['cpu_low'], check['cpu_high'])} |"
            )
    lines += ["", summary(results, int(settings["rounds"])), ""]
    return "\n".join(lines)


def token_for(seed: int, owner_index: int = 1) -> str:
    """A sales rep's bearer token (owner 1: not the admin), derived, never read from the DB."""
    return derive_token(seed, owner_index)
