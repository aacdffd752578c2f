"""``GET /metrics``: pool, cache, auth, edge, memory, feed and per-endpoint figures in
Prometheus text format.

A custom collector reads every component's ``get_stats()`` at scrape time into a registry
owned by the app (never the process-global one, so two apps in one process do not clash).
Names carry units (``_seconds``, ``_bytes``, ``_total``) per Prometheus conventions.

Who may read it: anyone who can reach the port, like any Prometheus target, so it carries
aggregates only: counters and gauges per endpoint, namespace or component, and the
profile's name. No versions, no row counts, no user, token or tenant appears in it. Serve
it on loopback or behind the network policy that guards the scraper, as the harness does.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from sixty_core.api.components import Components

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_COMPONENT_KEYS = ("tasks_active", "timers_active", "listeners_active", "retained_bytes")


def _gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
    metric = GaugeMetricFamily(name, doc, labels=list(labels))
    metric.add_metric(list(labels.values()), value)
    return metric


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _by_label(
    kind: type[GaugeMetricFamily | CounterMetricFamily],
    name: str,
    doc: str,
    label: str,
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    key: str,
) -> Metric:
    """One family with a sample per ``(label value, figures)`` of ``rows``: ``figures[key]``."""
    metric = kind(name, doc, labels=[label])
    for value, figures in rows:
        metric.add_metric([value], figures[key])
    return metric


class ComponentsCollector(Collector):
    """Turns the components' stats dicts into metric families at each scrape."""

    def __init__(self, comp: Components) -> None:
        self._comp = comp

    def collect(self) -> Iterator[Metric]:
        comp = self._comp
        yield _gauge("sixty_info", "Profile of this service", 1, profile=comp.profile.name)
        yield from self._pool(comp.pool.get_stats())
        yield from self._cache(comp.cache.get_stats())
        yield from self._memory(comp.memory.get_stats())
        edge: dict[str, Any] = comp.service.get_stats()
        for key in (
            "creates",
            "create_fallbacks",
            "edge_calls",
            "edge_failures",
            "edge_timeouts",
            "edge_retries",
        ):
            if key in edge:
                yield _counter(f"sixty_{key}", f"Deal creation: {key}", edge[key])
        if "edge_wait_ms_total" in edge:
            yield _counter(
                "sixty_edge_backoff_seconds",
                "Backoff waited before fallbacks",
                edge["edge_wait_ms_total"] / 1000,
            )
        if "breaker_state" in edge:
            yield _gauge(
                "sixty_breaker_open",
                "1 when the edge breaker is not closed",
                0 if edge["breaker_state"] == "closed" else 1,
            )
            yield _counter("sixty_breaker_opens", "Times the breaker opened", edge["breaker_opens"])
            yield _counter(
                "sixty_breaker_rejections",
                "Edge calls refused by the open breaker",
                edge["breaker_rejections"],
            )
        yield _counter(
            "sixty_create_replays",
            "Creates answered from an Idempotency-Key",
            edge["create_replays"],
        )
        yield _counter("sixty_auth_requests", "Requests that presented a token", comp.auth_requests)
        yield _counter("sixty_auth_failures", "Tokens refused (401)", comp.auth_failures)
        yield _gauge(
            "sixty_session_monitors_active", "Per-session monitors alive", comp.monitor.active
        )
        yield _gauge(
            "sixty_monitor_metrics_retained_bytes",
            "Bytes the performance monitor's metric arrays retain",
            comp.monitor.retained_bytes(),
        )
        yield _counter(
            "sixty_client_disconnects",
            "Requests whose client hung up while sending the body",
            comp.client_disconnects,
        )
        streams = comp.streams.get_stats()
        yield _gauge("sixty_streams_open", "Open event streams", streams["streams_open"])
        yield _counter(
            "sixty_streams_refused", "Streams refused (per-user cap)", streams["streams_refused"]
        )
        yield _counter(
            "sixty_streams_ended_by_logout",
            "Streams ended because their token logged out",
            streams["streams_ended_by_logout"],
        )
        feed = comp.feed.get_stats()
        yield _gauge("sixty_feed_listeners", "Registered feed listeners", feed["feed_listeners"])
        yield _counter(
            "sixty_feed_events", "Deal change events received", feed["feed_events_received"]
        )
        yield from self._endpoints(comp.endpoint_stats)
        yield _gauge(
            "sixty_request_log_retained_bytes",
            "Bytes the request log retains",
            comp.request_log.retained_bytes(),
        )

    def _pool(self, s: dict[str, Any]) -> Iterator[Metric]:
        for key in ("pool_size", "pool_idle", "pool_busy", "pool_waiting", "pool_max_size"):
            yield _gauge(f"sixty_{key}", f"Connection pool {key}", s[key])
        yield _counter("sixty_pool_acquires", "Connections acquired", s["acquires"])
        yield _counter(
            "sixty_db_statements_sent",
            "Statements sent on the pool's connections, attributed to a request or not",
            s["statements_sent"],
        )
        yield _counter(
            "sixty_pool_unpooled_connections",
            "Connections lent from outside the pool (legacy fallback)",
            s["unpooled_connections"],
        )
        yield _counter(
            "sixty_pool_acquire_timeouts", "Acquires that timed out", s["acquire_timeouts"]
        )
        yield _counter(
            "sixty_pool_rejections", "Acquires refused at once (overload)", s["rejections"]
        )
        yield _counter(
            "sixty_pool_busy_connection_seconds",
            "Connection-seconds in use",
            s["busy_connection_s"],
        )
        yield _counter(
            "sixty_pool_open_connection_seconds", "Connection-seconds open", s["open_connection_s"]
        )
        yield _gauge(
            "sixty_pool_efficiency_ratio", "busy / open connection-seconds", s["pool_efficiency"]
        )
        wait = HistogramMetricFamily(
            "sixty_pool_acquire_wait_seconds", "Wait of successful acquires"
        )
        wait.add_metric(
            [],
            [
                (le if le == "+Inf" else f"{float(le) / 1000:g}", count)
                for le, count in s["acquire_wait_ms_buckets"].items()
            ],
            sum_value=s["acquire_wait_ms_total"] / 1000,
        )
        yield wait
        health = GaugeMetricFamily(
            "sixty_pool_health", "1 for the pool's current health state", labels=["state"]
        )
        for state in ("healthy", "busy", "overloaded"):
            health.add_metric([state], 1 if s["health"] == state else 0)
        yield health

    def _cache(self, s: dict[str, Any]) -> Iterator[Metric]:
        spaces = list(s["namespaces"].items())
        bounded = [(name, ns) for name, ns in spaces if ns["max_bytes"] is not None]
        for kind, name, doc, rows, key in (
            (CounterMetricFamily, "sixty_cache_hits", "Cache hits", spaces, "hits"),
            (CounterMetricFamily, "sixty_cache_misses", "Cache misses", spaces, "misses"),
            (GaugeMetricFamily, "sixty_cache_entries", "Cache entries", spaces, "entries"),
            (
                GaugeMetricFamily,
                "sixty_cache_bytes",
                "Bytes of values a byte-bounded namespace holds (as JSON, counted when stored)",
                bounded,
                "bytes",
            ),
            (
                GaugeMetricFamily,
                "sixty_cache_max_bytes",
                "A byte-bounded namespace's budget",
                bounded,
                "max_bytes",
            ),
            (
                CounterMetricFamily,
                "sixty_cache_too_large",
                "Values not kept because they exceed their namespace's byte budget",
                bounded,
                "too_large",
            ),
        ):
            yield _by_label(kind, name, doc, "namespace", rows, key)
        yield _gauge(
            "sixty_cache_hit_ratio", "hits / (hits + misses), all caches", s["cache_hit_rate"]
        )
        yield _counter("sixty_cache_evictions", "Capacity evictions", s["cache_evictions"])

    def _memory(self, s: dict[str, Any]) -> Iterator[Metric]:
        yield _gauge(
            "sixty_process_rss_bytes", "Resident set size at last sample", s["rss_mb"] * 1024 * 1024
        )
        # For leak checks from outside: every live Python object block, and every asyncio
        # task of the service's loop (tracked by a scope or not).
        yield _gauge(
            "sixty_process_allocated_blocks",
            "Memory blocks the interpreter has allocated (sys.getallocatedblocks)",
            sys.getallocatedblocks(),
        )
        yield _gauge("sixty_asyncio_tasks", "Tasks of the event loop", _loop_tasks())
        # What reference counting could not free: objects in reference cycles. Garbage
        # made per request piles up between collections and shows as RSS growth.
        yield _counter(
            "sixty_gc_collected_objects",
            "Objects the cyclic garbage collector freed (all generations)",
            sum(generation["collected"] for generation in gc.get_stats()),
        )
        for key in (
            "scopes_open",
            "scopes_leaking",
            "tasks_active",
            "timers_active",
            "listeners_active",
            "retained_bytes",
        ):
            yield _gauge(f"sixty_memory_{key}", f"Memory manager {key}", s[key])
        level = GaugeMetricFamily(
            "sixty_memory_level", "1 for the current RSS level", labels=["level"]
        )
        for name in ("normal", "warning", "critical"):
            level.add_metric([name], 1 if s["level"] == name else 0)
        yield level
        yield _counter("sixty_memory_cleanups", "Emergency cleanups run", s["cleanups_run"])
        for key in ("scopes_open", "scopes_leaking", *_COMPONENT_KEYS):
            family = GaugeMetricFamily(
                f"sixty_component_{key}", f"Memory manager {key} by component", labels=["component"]
            )
            for component, figures in s["components"].items():
                family.add_metric([component], figures[key])
            yield family

    def _endpoints(self, stats: dict[str, dict[str, int]]) -> Iterator[Metric]:
        rows = sorted(stats.items())
        for name, doc, key in (
            ("sixty_http_requests", "Requests by endpoint", "requests"),
            (
                "sixty_db_queries",
                "Statements sent to Postgres by endpoint (the X-Sixty-Queries headers summed)",
                "queries",
            ),
            ("sixty_auth_lookups", "Auth lookups by endpoint", "auth_lookups"),
            (
                "sixty_cache_joined_loads",
                "Cache loads a request waited for instead of running, by endpoint",
                "joined_loads",
            ),
        ):
            yield _by_label(CounterMetricFamily, name, doc, "endpoint", rows, key)


def _loop_tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # collected outside a running loop
        return 0


def metrics_endpoint(comp: Components) -> Any:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ComponentsCollector(comp))

    async def metrics(request: Request) -> Response:
        """``?collect=1`` runs the cyclic garbage collector first, so the allocated-block
        count a leak check compares is not noise of garbage not yet collected."""
        if request.query_params.get("collect") == "1":
            gc.collect()
        comp.memory.sample()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)

    return metrics
