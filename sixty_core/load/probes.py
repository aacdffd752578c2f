"""Live probes of a running service: its ``/metrics`` and its RSS, sampled at a fixed rate
into a time series while a load runs.

:class:`ServiceProbe` runs in a thread of its own (the harness waits on Locust meanwhile).
Every sample holds the scrape's wall time, the service's RSS (psutil on its pid when the
harness started it, else the service's own ``sixty_process_rss_bytes``) and the series the
report plots: cache hits and misses per namespace, pool size/busy/idle/waiting and its
connection-seconds, statements sent, requests served, open streams, feed listeners and
the memory level. A scrape that fails is counted, never fatal: a loaded service may be
slow to answer, and that is itself worth seeing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import msgspec
import psutil
from prometheus_client.parser import text_string_to_metric_families

from sixty_core.load.stats import slope_per_10k

DEFAULT_INTERVAL_S = 0.5
#: Requests the second half of a run must serve for its RSS slope to be reported.
MIN_SLOPE_REQUESTS = 1000
SCRAPE_TIMEOUT_S = 2.0

#: Gauges and counters kept from each scrape (after the ``sixty_`` prefix; counters end in
#: ``_total``). Labelled ones are kept per label, as ``name{value}``.
KEPT = (
    "cache_hits_total",
    "cache_misses_total",
    "cache_entries",
    "cache_bytes",
    "pool_size",
    "pool_busy",
    "pool_idle",
    "pool_waiting",
    "pool_busy_connection_seconds_total",
    "pool_open_connection_seconds_total",
    "pool_acquires_total",
    "db_statements_sent_total",
    "http_requests_total",
    "streams_open",
    "feed_listeners",
    "memory_level",
    "memory_listeners_active",
    "memory_timers_active",
    "memory_tasks_active",
    "session_monitors_active",
    "process_rss_bytes",
    "gc_collected_objects_total",
)


class ProbeSample(msgspec.Struct):
    """One scrape: ``t`` wall time (epoch seconds), ``rss_bytes`` (None when unknown) and
    the kept series by name."""

    t: float
    rss_bytes: int | None
    series: dict[str, float]


def sixty_series(text: str) -> tuple[str | None, dict[str, float]]:
    """(profile, every ``sixty_`` sample) of a Prometheus text exposition of the service:
    each sample named without the prefix, as ``name`` or ``name{label}``. The per-endpoint
    ``http_requests_total`` is summed over endpoints."""
    profile: str | None = None
    series: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sixty_info":
                profile = sample.labels.get("profile")
                continue
            if not sample.name.startswith("sixty_"):
                continue
            name = sample.name.removeprefix("sixty_")
            if name == "http_requests_total":
                series[name] = series.get(name, 0.0) + sample.value
                continue
            label = next(iter(sample.labels.values()), None)
            series[f"{name}{{{label}}}" if label else name] = sample.value
    return profile, series


def parse_metrics(text: str) -> tuple[str | None, dict[str, float]]:
    """(profile, the :data:`KEPT` series) of a ``/metrics`` text."""
    profile, series = sixty_series(text)
    return profile, {k: v for k, v in series.items() if k.partition("{")[0] in KEPT}


def summed(series: dict[str, float], prefix: str) -> float:
    """The sum of every series named ``prefix`` or ``prefix{label}``."""
    return sum(v for k, v in series.items() if k == prefix or k.startswith(prefix + "{"))


class ServiceProbe:
    """Samples ``base_url``/metrics and the RSS of ``pid`` every ``interval_s`` seconds in
    a daemon thread, from :meth:`start` until :meth:`stop` (bounded: one scrape's timeout
    plus one interval)."""

    def __init__(
        self, base_url: str, *, pid: int | None = None, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[ProbeSample] = []
        self.failed_scrapes = 0
        self.profile: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sixty-probe", daemon=True)
        self._process = psutil.Process(pid) if pid is not None else None

    def start(self) -> ServiceProbe:
        self.sample_once()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(SCRAPE_TIMEOUT_S + self.interval_s + 1)
        self.sample_once()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def sample_once(self) -> None:
        t = time.time()
        try:
            response = httpx.get(f"{self.base_url}/metrics", timeout=SCRAPE_TIMEOUT_S)
            response.raise_for_status()
            profile, series = parse_metrics(response.text)
        except (httpx.HTTPError, ValueError):
            self.failed_scrapes += 1
            return
        self.profile = profile or self.profile
        rss: int | None = None
        if self._process is not None:
            try:
                rss = int(self._process.memory_info().rss)
            except psutil.Error:
                rss = None
        elif "process_rss_bytes" in series:
            rss = int(series["process_rss_bytes"])
        self.samples.append(ProbeSample(t=t, rss_bytes=rss, series=series))

    def write(self, path: Path) -> None:
        """The time series as JSON lines, one sample per line."""
        encoder = msgspec.json.Encoder()
        with path.open("wb") as handle:
            for sample in self.samples:
                handle.write(encoder.encode(sample) + b"\n")


class RunFigures(msgspec.Struct):
    """Service-side figures over a run: deltas between the first and the last scrape."""

    cache_hits: int | None
    cache_misses: int | None
    cache_hit_rate: float | None
    pool_busy_connection_s: float | None
    pool_open_connection_s: float | None
    pool_efficiency: float | None
    statements: int | None
    requests_served: int | None
    max_rss_sampled_mb: float | None
    max_pool_waiting: float | None
    max_streams_open: float | None
    #: RSS growth over the run's second half (after warm-up), per 10k requests served
    #: (least squares of RSS on the service's request count); None without both.
    rss_slope_mb_per_10k_requests: float | None = None
    #: Objects the service's cyclic garbage collector freed per 1,000 requests served:
    #: garbage that reference counting could not free (None without both counters).
    cyclic_garbage_per_1k_requests: float | None = None


def _delta(samples: list[ProbeSample], prefix: str) -> float | None:
    first, last = samples[0].series, samples[-1].series
    if not any(k == prefix or k.startswith(prefix + "{") for k in last):
        return None
    return summed(last, prefix) - summed(first, prefix)


def _peak(samples: Iterable[ProbeSample], name: str) -> float | None:
    values = [s.series[name] for s in samples if name in s.series]
    return max(values) if values else None


def run_figures(samples: list[ProbeSample]) -> RunFigures:
    """Hit rate, pool efficiency and the rest over ``samples`` (None where unmeasured)."""
    if len(samples) < 2:
        return RunFigures(*([None] * (len(RunFigures.__struct_fields__) - 1)))
    hits = _delta(samples, "cache_hits_total")
    misses = _delta(samples, "cache_misses_total")
    busy = _delta(samples, "pool_busy_connection_seconds_total")
    opened = _delta(samples, "pool_open_connection_seconds_total")
    statements = _delta(samples, "db_statements_sent_total")
    served = _delta(samples, "http_requests_total")
    garbage = _delta(samples, "gc_collected_objects_total")
    rss = [s.rss_bytes for s in samples if s.rss_bytes is not None]
    looked_up = (hits or 0) + (misses or 0)
    return RunFigures(
        cache_hits=None if hits is None else int(hits),
        cache_misses=None if misses is None else int(misses),
        cache_hit_rate=(hits or 0) / looked_up if looked_up > 0 else None,
        pool_busy_connection_s=busy,
        pool_open_connection_s=opened,
        pool_efficiency=busy / opened if busy is not None and opened else None,
        statements=None if statements is None else int(statements),
        requests_served=None if served is None else int(served),
        max_rss_sampled_mb=max(rss) / 2**20 if rss else None,
        max_pool_waiting=_peak(samples, "pool_waiting"),
        max_streams_open=_peak(samples, "streams_open"),
        rss_slope_mb_per_10k_requests=_rss_slope(samples[len(samples) // 2 :]),
        cyclic_garbage_per_1k_requests=garbage / served * 1000
        if garbage is not None and served
        else None,
    )


def _rss_slope(samples: list[ProbeSample]) -> float | None:
    points = [
        (s.series["http_requests_total"], s.rss_bytes / 2**20)
        for s in samples
        if s.rss_bytes is not None and "http_requests_total" in s.series
    ]
    # Fewer requests than this make a slope of allocator noise and start-up.
    if len(points) < 3 or points[-1][0] - points[0][0] < MIN_SLOPE_REQUESTS:
        return None
    return slope_per_10k([p[0] for p in points], [p[1] for p in points])
