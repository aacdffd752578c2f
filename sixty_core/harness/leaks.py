"""``sixty leaks``: leaks of the running service, found by growth, leftovers and memray.

The service runs under ``memray run --trace-python-allocators`` (memray's leak mode for
Python code: every pymalloc allocation and free is recorded, so freed objects are not
mistaken for leaks; ``PYTHONMALLOC=malloc`` would do the same but hides the interpreter's
allocated-block count, one of the counters watched here). A lifecycle
workload drives it in cycles: log sessions in (a session row, as a sign-in makes), open
the pipeline, open and leave the change feed, create, update, move and delete a deal, log
out. After every cycle the harness reads the service's counters (``/metrics``: the memory
manager's resources per component, feed listeners, asyncio tasks, allocated blocks,
retained bytes, cache entries), its RSS and open file descriptors, and its connections in
``pg_stat_activity``.

Verdicts, each with its evidence (:class:`Verdict`):

- **growth**: after the warm-up, a counter that grows in every tracked cycle;
- **leftover**: a file descriptor, task or connection still there after the workload
  drained, compared with the baseline taken after the warm-up (CPython's refleak rule);
- **scope**: the memory manager's closed scopes that still hold a resource.

The traced service is stopped with SIGINT and waited for, so the capture is complete; its
leaked allocations (allocated, never freed) are grouped by stack and attributed to a
component by the innermost ``sixty_core`` frame, and memray's leaks flamegraph is written
beside ``leaks.json``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from sixty_core.db import workflow
from sixty_core.db.provision import connect
from sixty_core.db.seed import SeedOwner
from sixty_core.harness.rundir import prepare_run_dir
from sixty_core.harness.servers import Supervisor, memray_launcher
from sixty_core.load.contract import deal_id_anywhere, payload
from sixty_core.load.probes import sixty_series
from sixty_core.load.stats import slope_per_10k
from sixty_core.memory import process_peak_rss_bytes
from sixty_core.memray_sites import MemrayFindings, memray_findings, write_flamegraph
from sixty_core.settings import Settings
from sixty_core.tokens import hash_token

SCHEMA = "sixty.leaks/1"
#: Warm-up long enough to fill what is bounded (the optimized request log keeps 1,000
#: summaries; a cycle sends 36 requests), then 15 tracked cycles.
DEFAULT_CYCLES = 45
WARMUP_CYCLES = 30
SESSIONS_PER_CYCLE = 4
#: The traced service needs longer to stop: memray writes its capture on the way out.
TRACED_STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 20.0

#: Counters watched for growth, by prefix, and the component each belongs to (``{}`` is
#: the label: the component or cache namespace).
GROWTH_COUNTERS: dict[str, str] = {
    "component_tasks_active": "{}",
    "component_timers_active": "{}",
    "component_listeners_active": "{}",
    "component_retained_bytes": "{}",
    "component_scopes_leaking": "{}",
    "session_monitors_active": "session_monitor",
    "monitor_metrics_retained_bytes": "session_monitor",
    "request_log_retained_bytes": "request_log",
    "feed_listeners": "feed",
    "streams_open": "feed",
    "asyncio_tasks": "asyncio_tasks",
    "process_allocated_blocks": "heap",
    "cache_entries": "cache:{}",
    "process_open_fds": "process_fds",
    "pg_connections": "pool",
}
#: Resources that must be back to their baseline once the workload drained.
LEFTOVER_COUNTERS: dict[str, str] = {
    "process_open_fds": "process_fds",
    "asyncio_tasks": "asyncio_tasks",
    "pg_connections": "pool",
}


@dataclass(frozen=True)
class LeakOptions:
    profile: str
    out: Path
    cycles: int = DEFAULT_CYCLES
    warmup: int = WARMUP_CYCLES
    inject: frozenset[str] = frozenset()
    progress: bool = True
    #: An already seeded database (at the settings' scale and seed) to run on; None
    #: provisions and seeds one for the run.
    dsn: str | None = None
    #: Also list the top allocators at the heap's peak (one more pass over the capture).
    peak_allocators: bool = True


class CycleSample(msgspec.Struct):
    """The counters after one cycle (``phase`` ``cycle``), after warm-up (``baseline``)
    or once the workload drained (``drained``)."""

    phase: str
    cycle: int
    requests: int
    t: float
    rss_bytes: int
    series: dict[str, float]


class Verdict(msgspec.Struct):
    component: str
    rule: str
    counter: str
    values: list[float]
    evidence: str
    stack: list[str] | None = None


class LeakResult(msgspec.Struct):
    schema: str
    profile: str
    inject: list[str]
    cycles: int
    warmup: int
    requests: int
    leaking_components: list[str]
    verdicts: list[Verdict]
    peak_rss_mb: float | None
    rss_slope_mb_per_10k_requests: float | None
    memray: MemrayFindings | None
    samples: list[CycleSample]


# --- the workload ------------------------------------------------------------------------


class Workload:
    """One cycle: ``SESSIONS_PER_CYCLE`` sign-ins, each going through the lifecycle."""

    def __init__(self, client: httpx.AsyncClient, conn: Any, owners: Sequence[SeedOwner]):
        self._client = client
        self._conn = conn
        self._owners = owners
        self._stages: list[str] = []
        self.requests = 0
        self.failures: list[str] = []

    async def _call(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1
        response = await self._client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
        )
        if response.status_code >= 400:
            self.failures.append(f"{method} {path.split('?')[0]}: {response.status_code}")
        return response

    async def sign_in(self, owner: SeedOwner) -> str:
        """What a sign-in leaves behind: a session row; its token is the caller's."""
        token = "sixty_" + secrets.token_hex(32)
        await self._conn.execute(
            "INSERT INTO sessions (token_hash, user_id, expires_at) "
            "VALUES ($1, $2, now() + interval '1 hour')",
            hash_token(token),
            uuid.UUID(owner.id),
        )
        return token

    async def cycle(self, number: int) -> None:
        for i in range(SESSIONS_PER_CYCLE):
            owner = self._owners[(number * SESSIONS_PER_CYCLE + i) % len(self._owners)]
            await self.session(await self.sign_in(owner), owner)

    async def session(self, token: str, owner: SeedOwner) -> None:
        await self._call("GET", "/api/deals?limit=50", token)
        stages = payload((await self._call("GET", "/api/stages", token)).content)
        if isinstance(stages, list) and stages:
            self._stages = [str(s["id"]) for s in stages]
        await self._call("GET", "/api/deals/pipeline-stats", token)
        await self.visit_feed(token)
        created = await self._call(
            "POST",
            "/api/deals",
            token,
            json={"name": "leak check", "company": "Leak Ltd", "owner_id": owner.id},
        )
        deal = deal_id_anywhere(created.content)
        if deal is not None:
            await self._call("PATCH", f"/api/deals/{deal}", token, json={"probability": 40})
            if self._stages:
                await self._call(
                    "POST", f"/api/deals/{deal}/move", token, json={"stage_id": self._stages[-1]}
                )
            await self._call("DELETE", f"/api/deals/{deal}", token)
        await self._call("POST", "/api/auth/logout", token)

    async def visit_feed(self, token: str) -> None:
        """Open the change feed, read its first frame, leave (the connection closes)."""
        self.requests += 1
        async with self._client.stream(
            "GET", "/api/deals/stream", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            if response.status_code != 200:
                self.failures.append(f"GET /api/deals/stream: {response.status_code}")
                return
            async for _ in response.aiter_raw():
                break


# --- counters ----------------------------------------------------------------------------


async def read_counters(
    client: httpx.AsyncClient, conn: Any, process: psutil.Process
) -> tuple[int, dict[str, float]]:
    response = await client.get("/metrics?collect=1")
    response.raise_for_status()
    _, series = sixty_series(response.text)
    series["process_open_fds"] = float(process.num_fds())
    series["pg_connections"] = float(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sixty'"
        )
    )
    return int(process.memory_info().rss), series


# --- verdicts ----------------------------------------------------------------------------


def _component_of(counter: str) -> str | None:
    name, _, label = counter.partition("{")
    label = label.rstrip("}")
    template = GROWTH_COUNTERS.get(name)
    if template is None:
        return None
    return template.format(label) if "{}" in template else template


#: Counters the allocator's own churn makes jitter from cycle to cycle: their growth is
#: read on the floor (the minimum of each third of the tracked cycles).
JITTERY = ("process_allocated_blocks",)


def grows(counter: str, values: Sequence[float], requests: int) -> bool:
    """``values`` (baseline first) grew in every tracked cycle. For a jittery counter: its
    floor rose from each third of the tracked cycles to the next, and by at least one
    block per tracked request (``requests``) above the baseline, well above the churn of
    a few hundred blocks a clean run shows."""
    if counter not in JITTERY:
        return all(b > a for a, b in itertools.pairwise(values))
    cycles = list(values[1:])
    third = len(cycles) // 3
    if third == 0:
        return False
    floors = [min(cycles[i * third : (i + 1) * third]) for i in range(3)]
    rising = all(b > a for a, b in itertools.pairwise(floors))
    return rising and floors[-1] - values[0] >= max(1, requests)


def verdicts(samples: Sequence[CycleSample]) -> list[Verdict]:
    """The growth, leftover and scope rules over ``samples`` (baseline, cycles, drained)."""
    baseline = next(s for s in samples if s.phase == "baseline")
    tracked = [baseline, *[s for s in samples if s.phase == "cycle" and s.cycle > baseline.cycle]]
    drained = next(s for s in samples if s.phase == "drained")
    found: list[Verdict] = []
    if len(tracked) >= 3:
        for counter in sorted(tracked[-1].series):
            component = _component_of(counter)
            if component is None:
                continue
            values = [s.series.get(counter, 0.0) for s in tracked]
            if grows(counter, values, tracked[-1].requests - tracked[0].requests):
                how = "its floor rose over" if counter in JITTERY else "grew in each of"
                found.append(
                    Verdict(
                        component=component,
                        rule="growth",
                        counter=counter,
                        values=values,
                        evidence=f"{counter} {how} {len(values) - 1} cycles: "
                        f"{values[0]:g} -> {values[-1]:g}",
                    )
                )
    for counter, component in LEFTOVER_COUNTERS.items():
        before, after = baseline.series.get(counter, 0.0), drained.series.get(counter, 0.0)
        if after > before:
            found.append(
                Verdict(
                    component=component,
                    rule="leftover",
                    counter=counter,
                    values=[before, after],
                    evidence=f"{counter} {before:g} after warm-up, {after:g} once drained",
                )
            )
    for counter, value in drained.series.items():
        if counter.startswith("component_scopes_leaking{") and value > 0:
            component = counter.partition("{")[2].rstrip("}")
            found.append(
                Verdict(
                    component=component,
                    rule="scope",
                    counter=counter,
                    values=[value],
                    evidence=f"{value:g} closed {component} scopes still hold resources "
                    "(memory manager)",
                )
            )
    return found


def rss_slope(samples: Sequence[CycleSample]) -> float | None:
    """RSS growth in MB per 10,000 requests over the tracked cycles (least squares)."""
    baseline = next(s for s in samples if s.phase == "baseline")
    tracked = [baseline, *[s for s in samples if s.phase == "cycle" and s.cycle > baseline.cycle]]
    if len(tracked) < 3:
        return None
    return slope_per_10k([s.requests for s in tracked], [s.rss_bytes / 2**20 for s in tracked])


#: Counters that say "something grows" without saying what: memray's sites name it.
ANONYMOUS = ("heap", "asyncio_tasks")


def attach_stacks(
    found: list[Verdict],
    memray: MemrayFindings | None,
    flat: frozenset[str],
) -> list[Verdict]:
    """Give each verdict the top surviving site of its component. A growth of the
    anonymous counters (allocated blocks, tasks) is named after the site that left most
    allocations behind, outside the components already found and those whose own
    counters stayed ``flat`` (they hold a bounded amount: a log's last entries, a cache).
    A growth of allocated blocks beside any other verdict is dropped: the other leak is
    made of those blocks, and where a block was allocated says nothing of who holds it."""
    named = {v.component for v in found if v.component not in ANONYMOUS}
    sites = memray.sites if memray is not None else []
    kept: list[Verdict] = []
    for verdict in found:
        if verdict.component not in ANONYMOUS:
            own = [s for s in sites if s.component == verdict.component]
            if own:
                verdict.stack = own[0].frames
            kept.append(verdict)
            continue
        if verdict.component == "heap" and (named or len(found) > 1):
            continue  # the other verdicts' resources are made of these blocks
        others = [s for s in sites if s.component not in named | flat | {"http"}]
        if others:
            site = others[0]
            verdict.evidence += (
                f"; {site.survivors} allocations made after the warm-up never freed at {site.site}"
            )
            verdict.component, verdict.stack = site.component, site.frames
            kept.append(verdict)
        elif not named:
            kept.append(verdict)
    return kept


def flat_components(samples: Sequence[CycleSample], found: Sequence[Verdict]) -> frozenset[str]:
    """Components with a watched counter that did not grow over the tracked cycles."""
    grown = {v.component for v in found}
    last = samples[-1].series
    flat = {
        component
        for counter in last
        if (component := _component_of(counter)) is not None
        and component not in grown
        and component not in ANONYMOUS
    }
    # cache:NAMESPACE counters speak for the cache module as a whole.
    return frozenset(flat | {c.split(":")[0] for c in flat if c.startswith("cache:")})


# --- the run -----------------------------------------------------------------------------


async def run(
    options: LeakOptions, settings: Settings, console: Console, log: workflow.StepLog
) -> LeakResult:
    out = options.out
    prepare_run_dir(out)
    capture = out / "service.memray.bin"
    async with workflow.seeded_dsn(settings, log=log, dsn=options.dsn) as (dsn, seeded):
        supervisor = Supervisor(
            dsn,
            options.profile,
            time_scale=0.1,
            log_dir=out / "servers",
            keep_logs=True,
            test_faults=options.inject,
            service_launcher=memray_launcher(capture, trace_python_allocators=True),
        )
        (out / "servers").mkdir()
        with log.step("start servers"):
            await asyncio.to_thread(supervisor.start)
        owners = [o for o in seeded if not o.is_admin] or seeded
        conn = await connect(dsn)
        samples: list[CycleSample] = []
        try:
            process = psutil.Process(supervisor.pids()["service"])
            async with httpx.AsyncClient(
                base_url=supervisor.service_url, timeout=REQUEST_TIMEOUT_S
            ) as client:
                workload = Workload(client, conn, owners)

                async def sample(phase: str, cycle: int) -> None:
                    rss, series = await read_counters(client, conn, process)
                    samples.append(
                        CycleSample(phase, cycle, workload.requests, time.time(), rss, series)
                    )

                await sample("start", 0)
                with _progress(options) as advance:
                    for number in range(1, options.cycles + 1):
                        await workload.cycle(number)
                        await asyncio.sleep(0.1)
                        await sample("cycle", number)
                        if number == options.warmup:
                            samples.append(msgspec.structs.replace(samples[-1], phase="baseline"))
                        advance()
                await asyncio.sleep(1.0)  # let closed streams and scopes finish releasing
                await sample("drained", options.cycles)
            peak = process_peak_rss_bytes(process.pid)
        finally:
            await conn.close()
            with log.step("stop (traced)"):
                await asyncio.to_thread(supervisor.stop, TRACED_STOP_TIMEOUT_S)
    if workload.failures:
        console.print(
            f"[yellow]{len(workload.failures)} workload requests failed[/], e.g. "
            f"{workload.failures[0]}"
        )
    found = verdicts(samples)
    findings: MemrayFindings | None = None
    if capture.exists():
        with log.step("memray"):
            start = next(s for s in samples if s.phase == "baseline")
            end = [s for s in samples if s.phase == "cycle"][-1]
            # Two passes over the capture: the flamegraph in memray's own process beside
            # the findings in this one, on both cores.
            flame, read = await asyncio.gather(
                asyncio.to_thread(write_flamegraph, capture, out / "leaks-flamegraph.html"),
                asyncio.to_thread(
                    functools.partial(
                        memray_findings,
                        with_peak_allocators=options.peak_allocators,
                    ),
                    capture,
                    None,
                    start.t,
                    end.t,
                    end.requests - start.requests,
                ),
            )
            read.flamegraph = str(flame) if flame else None
            findings = read
    found = attach_stacks(found, findings, flat_components(samples, found))
    result = LeakResult(
        schema=SCHEMA,
        profile=options.profile,
        inject=sorted(options.inject),
        cycles=options.cycles,
        warmup=options.warmup,
        requests=workload.requests,
        leaking_components=sorted({v.component for v in found}),
        verdicts=found,
        peak_rss_mb=peak / 2**20 if peak else None,
        rss_slope_mb_per_10k_requests=rss_slope(samples),
        memray=findings,
        samples=samples,
    )
    (out / "leaks.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n"
    )
    return result


class _progress:
    def __init__(self, options: LeakOptions) -> None:
        self._progress = Progress(
            TextColumn("[bold]leak cycles[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            disable=not options.progress,
        )
        self._task = self._progress.add_task("cycles", total=options.cycles)

    def __enter__(self) -> Callable[[], None]:
        self._progress.__enter__()
        return lambda: self._progress.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)


def summary(result: LeakResult) -> list[str]:
    lines = [
        f"profile {result.profile}"
        + (f" with {', '.join(result.inject)}" if result.inject else "")
        + f": {result.cycles} cycles, {result.requests} requests",
    ]
    if result.leaking_components:
        lines.append(f"[bold red]leaking components ({len(result.leaking_components)}):[/]")
        for component in result.leaking_components:
            first = next(v for v in result.verdicts if v.component == component)
            lines.append(f"  {component}: {first.evidence}")
            ours = [f for f in first.stack or [] if f.startswith("sixty_core/")]
            if ours:
                lines.append(f"    at {ours[0]}")
    else:
        lines.append("[green]no leaking components[/]")
    if result.memray is not None:
        lines.append(f"peak heap (memray)  {result.memray.peak_heap_mb:.1f} MB")
    if result.peak_rss_mb is not None:
        lines.append(f"peak RSS (VmHWM)    {result.peak_rss_mb:.1f} MB")
    if result.memray is not None and result.memray.heap_slope_mb_per_10k_requests is not None:
        lines.append(
            f"heap slope          {result.memray.heap_slope_mb_per_10k_requests:+.2f} MB per "
            "10k requests after warm-up (memray)"
        )
    if result.rss_slope_mb_per_10k_requests is not None:
        lines.append(
            f"RSS slope           {result.rss_slope_mb_per_10k_requests:+.2f} MB per 10k requests "
            "(under tracing: includes memray's buffers)"
        )
    return lines
