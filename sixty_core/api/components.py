"""Build the service's parts for one profile: the only place that reads the flags.

Each flag picks one strategy (DESIGN.md section 3):

================== ================================== ===================================
flag               off (legacy)                       on (optimized)
================== ================================== ===================================
session_cache      DirectSessions (2 lookups/request) CachedSessions (60 s, revocable)
static_cache       DirectStaticData                   CachedStaticData (preloaded)
query_cache        NoReadCache                        SelectResultCache (tags, 5 min)
pool_tuning        LEGACY_POOL (20/2, no cmd timeout) OPTIMIZED_POOL (15/3, bounded waits)
robust_create      LegacyCreate + LegacyEdgeClient    RobustCreate + OptimizedEdgeClient
bounded_lists      UnboundedLists                     BoundedLists
resource_tracking  MemoryManager(tracking=False),     MemoryManager(tracking=True),
                   UnboundedRequestLog                BoundedRequestLog
================== ================================== ===================================
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from sixty_core.auth import Authenticator, CachedSessions, DirectSessions, User
from sixty_core.breaker import CircuitBreaker
from sixty_core.cache import Cache
from sixty_core.db.pool import LEGACY_POOL, OPTIMIZED_POOL, Pool
from sixty_core.db.repository import NoReadCache, ReadCache, Repository, SelectResultCache
from sixty_core.edge import LegacyEdgeClient, OptimizedEdgeClient
from sixty_core.errors import AuthError
from sixty_core.feed import DealFeed
from sixty_core.memory import (
    BoundedRequestLog,
    ComponentScope,
    MemoryManager,
    RequestLog,
    UnboundedRequestLog,
)
from sixty_core.profiles import Profile
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


@dataclass
class SessionMonitors:
    """The original's per-session "performance monitor": a repeating timer per session.

    The timer lives in a memory-manager scope opened at the session's first request and
    closed at logout. With ``resource_tracking`` on, closing releases it, and at most
    ``max_sessions`` monitors live at once: opening one more closes the least recently
    seen (a session that stops calling never logs out). Off (``max_sessions=None``), the
    timer keeps firing forever and nothing is ever evicted, as the original's untracked
    ``setInterval`` did.
    """

    memory: MemoryManager
    period_s: float
    max_sessions: int | None = None
    _scopes: OrderedDict[str, ComponentScope] = field(default_factory=OrderedDict)
    ticks: int = 0

    def _tick(self) -> None:
        self.ticks += 1

    async def on_request(self, token_hash: str) -> None:
        if token_hash in self._scopes:
            self._scopes.move_to_end(token_hash)
            return
        scope = self.memory.open_scope("session_monitor")
        scope.call_every(self.period_s, self._tick)
        self._scopes[token_hash] = scope
        if self.max_sessions is not None and len(self._scopes) > self.max_sessions:
            _, oldest = self._scopes.popitem(last=False)
            await oldest.close()

    @property
    def active(self) -> int:
        return len(self._scopes)

    async def on_logout(self, token_hash: str) -> None:
        scope = self._scopes.pop(token_hash, None)
        if scope is not None:
            await scope.close()

    async def close(self) -> None:
        for scope in list(self._scopes.values()):
            await scope.close()
        self._scopes.clear()


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
    monitors: SessionMonitors
    feed: DealFeed
    started_at: float = field(default_factory=time.monotonic)
    endpoint_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    auth_requests: int = 0
    auth_failures: int = 0

    async def authenticate(self, token: str, token_hash: str) -> User:
        self.auth_requests += 1
        try:
            user = await self.auth.authenticate(token)
        except AuthError:
            self.auth_failures += 1
            raise
        await self.monitors.on_request(token_hash)
        return user


@asynccontextmanager
async def build(
    settings: Settings, profile: Profile, *, dsn: str, edge_url: str, memory: MemoryManager
) -> AsyncIterator[Components]:
    """Open every part for ``profile`` against ``dsn``; close them all on exit.

    Shutdown order: stop the feed and session monitors, close the edge client, then the
    pool (which waits for in-flight queries), then release what legacy scopes still hold
    so a stopped legacy app does not keep timers firing.
    """
    on = profile.flags
    cache = Cache()
    pool = Pool(
        dsn,
        OPTIMIZED_POOL if "pool_tuning" in on else LEGACY_POOL,
        application_name=settings.application_name,
    )
    read_cache: ReadCache = SelectResultCache(cache) if "query_cache" in on else NoReadCache()
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
    monitors = SessionMonitors(
        memory,
        settings.session_monitor_period_s,
        max_sessions=settings.max_monitored_sessions if tracking else None,
    )
    feed = DealFeed(dsn, bounded_queues=tracking)
    memory.add_cleanup_hook("shrink_caches", lambda: cache.shrink(0.5))

    async with AsyncExitStack() as stack:
        # Callbacks run last-pushed first: monitors, feed, leftovers, edge, pool.
        await pool.open()
        stack.push_async_callback(pool.close)
        await edge.open()
        stack.push_async_callback(edge.close)
        stack.push_async_callback(_release_leftovers, memory)
        await feed.open()
        stack.push_async_callback(feed.close)
        stack.push_async_callback(monitors.close)
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
            monitors=monitors,
            feed=feed,
        )


async def _release_leftovers(memory: MemoryManager) -> None:
    memory.release_closed()
    await asyncio.sleep(0)
