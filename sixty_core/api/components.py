"""Build the service's parts for one profile: the only place that reads the flags.

Each flag picks one strategy (DESIGN.md section 3):

================== ================================== ===================================
flag               off (legacy)                       on (optimized)
================== ================================== ===================================
session_cache      DirectSessions (2 lookups/request) CachedSessions (60 s, revocable)
static_cache       DirectStaticData                   CachedStaticData (preloaded)
query_cache        NoReadCache                        SelectResultCache (tags, 5 min)
pool_tuning        LEGACY_POOL (node-pg mapped)       OPTIMIZED_POOL (15/3, bounded waits)
robust_create      LegacyCreate + LegacyEdgeClient    RobustCreate + OptimizedEdgeClient
bounded_lists      UnboundedLists                     BoundedLists
resource_tracking  MemoryManager(tracking=False),     MemoryManager(tracking=True),
                   UnboundedRequestLog,               BoundedRequestLog,
                   LEGACY_MONITORING                  OPTIMIZED_MONITORING
================== ================================== ===================================

Named test faults (:mod:`sixty_core.faults`) come from ``settings.test_faults``, never from
a profile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from sixty_core.auth import Authenticator, CachedSessions, DirectSessions, User, parse_bearer
from sixty_core.breaker import CircuitBreaker
from sixty_core.cache import Cache, Memo
from sixty_core.db.pool import LEGACY_POOL, OPTIMIZED_POOL, Pool
from sixty_core.db.repository import NoReadCache, ReadCache, Repository, SelectResultCache
from sixty_core.edge.client import LegacyEdgeClient, OptimizedEdgeClient
from sixty_core.errors import AuthError
from sixty_core.faults import NeverInvalidated, TestFaults
from sixty_core.feed import DealFeed
from sixty_core.memory import MemoryManager
from sixty_core.monitor import LEGACY_MONITORING, OPTIMIZED_MONITORING, PerformanceMonitor
from sixty_core.profiles import Profile
from sixty_core.request_log import BoundedRequestLog, RequestLog, UnboundedRequestLog
from sixty_core.service import (
    BoundedLists,
    CreateStrategy,
    DealService,
    LegacyCreate,
    ListStrategy,
    RobustCreate,
    UnboundedLists,
)
from sixty_core.settings import Settings
from sixty_core.static_data import CachedStaticData, DirectStaticData, StaticData
from sixty_core.streams import OpenStreams
from sixty_core.tokens import hash_token

HEALTH_DETAIL_TTL_S = 1.0


@dataclass
class Components:
    """Everything a running app holds, built for one profile by :func:`build`."""

    settings: Settings
    profile: Profile
    pool: Pool
    cache: Cache
    repository: Repository
    static: StaticData
    auth: Authenticator
    service: DealService
    memory: MemoryManager
    request_log: RequestLog
    monitor: PerformanceMonitor
    feed: DealFeed
    streams: OpenStreams
    faults: TestFaults
    started_at: float = field(default_factory=time.monotonic)
    endpoint_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    auth_requests: int = 0
    auth_failures: int = 0
    client_disconnects: int = 0
    #: ``/api/health?detailed=true`` is computed at most once a second (it scans tables).
    health_detail: Memo = field(default_factory=lambda: Memo(ttl_s=HEALTH_DETAIL_TTL_S))

    async def authenticate(self, authorization: str | None) -> tuple[User, str]:
        """The user behind an ``Authorization: Bearer`` header, and the token's hash
        (AuthError if none); counts the session's activity."""
        token = parse_bearer(authorization)
        token_hash = hash_token(token)
        self.auth_requests += 1
        try:
            user = await self.auth.authenticate(token_hash)
        except AuthError:
            self.auth_failures += 1
            raise
        if not self.monitor.touch(token_hash):  # its first request opens its monitor
            await self.monitor.on_request(token_hash)
        if self.faults.names:
            await self.faults.after_authentication(self.pool)
        return user, token_hash


@asynccontextmanager
async def build(
    settings: Settings, profile: Profile, *, dsn: str, edge_url: str, memory: MemoryManager
) -> AsyncIterator[Components]:
    """Open every part for ``profile`` against ``dsn``; close them all on exit.

    Shutdown order: stop the feed and the session monitors, close the edge client, then
    the pool (which waits for in-flight queries), then release what legacy scopes still
    hold so a stopped legacy app does not keep timers firing.
    """
    on = profile.flags
    cache = Cache()
    pool = Pool(
        dsn,
        OPTIMIZED_POOL if "pool_tuning" in on else LEGACY_POOL,
        application_name=settings.application_name,
    )
    read_cache: ReadCache = SelectResultCache(cache) if "query_cache" in on else NoReadCache()
    if "stale_cache" in settings.test_faults:
        read_cache = NeverInvalidated(read_cache)
    repository = Repository(pool, read_cache=read_cache)
    static: StaticData = (
        CachedStaticData(repository, cache)
        if "static_cache" in on
        else DirectStaticData(repository)
    )
    auth: Authenticator = (
        CachedSessions(repository, cache) if "session_cache" in on else DirectSessions(repository)
    )
    lists: ListStrategy = (
        BoundedLists(repository) if "bounded_lists" in on else UnboundedLists(repository, static)
    )
    edge: LegacyEdgeClient | OptimizedEdgeClient
    creator: CreateStrategy
    if "robust_create" in on:
        edge = OptimizedEdgeClient(
            edge_url, breaker=CircuitBreaker(), deadline_s=settings.edge_deadline_s
        )
        creator = RobustCreate(edge, repository, static)
    else:
        edge = LegacyEdgeClient(edge_url, time_scale=settings.time_scale)
        creator = LegacyCreate(edge, repository, static)
    tracking = "resource_tracking" in on
    request_log: RequestLog = BoundedRequestLog() if tracking else UnboundedRequestLog()
    monitor = PerformanceMonitor(
        memory,
        settings.session_monitor_period_s,
        OPTIMIZED_MONITORING if tracking else LEGACY_MONITORING,
        settings.max_monitored_sessions,
    )
    feed = DealFeed(dsn)
    faults = TestFaults(settings.test_faults, dsn=dsn)
    memory.add_cleanup_hook("shrink_caches", lambda: cache.shrink(0.5))

    async with AsyncExitStack() as stack:
        # Callbacks run last-pushed first: monitor, feed, leftovers, faults, edge, pool.
        await pool.open()
        stack.push_async_callback(pool.close)
        await edge.open()
        stack.push_async_callback(edge.close)
        stack.push_async_callback(faults.close)
        stack.push_async_callback(_release_leftovers, memory)
        await feed.open()
        stack.push_async_callback(feed.close)
        stack.push_async_callback(monitor.close)
        await memory.start_sampling(settings.memory_sample_interval_s)
        stack.push_async_callback(memory.close)
        await static.preload()
        yield Components(
            settings=settings,
            profile=profile,
            pool=pool,
            cache=cache,
            repository=repository,
            static=static,
            auth=auth,
            service=DealService(repository, static, lists, creator),
            memory=memory,
            request_log=request_log,
            monitor=monitor,
            feed=feed,
            streams=OpenStreams(max_per_user=settings.max_streams_per_user),
            faults=faults,
        )


async def _release_leftovers(memory: MemoryManager) -> None:
    memory.release_closed()
    await asyncio.sleep(0)
