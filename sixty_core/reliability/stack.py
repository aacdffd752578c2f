"""A running service with fault proxies in its paths: what every scenario acts on.

:func:`running_stack` starts, in the running event loop and on 127.0.0.1, the edge
upstream (writing into the same database), a :class:`~sixty_core.reliability.proxy.FaultProxy`
in front of Postgres and another in front of the edge, and the deal API for one profile
whose DSN and edge URL point at those proxies. A scenario injects faults by setting toxics
on the proxies, terminating backends through :meth:`Stack.admin`, or changing the edge's
own faults; it reads the service's resources in process (:meth:`Stack.resources`) and the
server side through ``pg_stat_activity``.

The service runs in the same process as the scenario, so the scenario can read the pool
and cache objects themselves rather than trust an endpoint that reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx

from sixty_core.api import create_app
from sixty_core.api.components import Components
from sixty_core.api.server import GRACEFUL_SHUTDOWN_S, QuietServer, start_on_loopback
from sixty_core.db.pool import DEFAULT_CLOSE_TIMEOUT_S, OPTIMIZED_POOL, Pool, PoolSettings
from sixty_core.db.provision import connect
from sixty_core.db.repository import Repository
from sixty_core.db.seed import SeedOwner, seeded_owners
from sixty_core.edge.upstream import EdgeFaults, create_edge_app
from sixty_core.harness.servers import make_edge_writer
from sixty_core.profiles import Profile
from sixty_core.reliability.proxy import FaultProxy
from sixty_core.settings import Settings

#: How long stopping a server may take before its task is cancelled: the service's own
#: drain (uvicorn's graceful shutdown, then the pool's close), and a margin.
STOP_TIMEOUT_S = GRACEFUL_SHUTDOWN_S + DEFAULT_CLOSE_TIMEOUT_S + 5.0
#: The client's own bound on any one request; scenarios that expect longer set their own.
CLIENT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Resources:
    """What a scenario must find back at baseline once its workload drains."""

    pool_available: int
    pool_max: int
    pool_waiting: int
    backends: int
    idle_in_transaction: int
    tasks: int
    fds: int
    #: Coroutine names of the running tasks, the evidence when ``tasks`` grew.
    task_names: tuple[str, ...] = ()
    #: What each open fd is (``socket:[inode]``, a path), the evidence when ``fds`` grew.
    fd_kinds: tuple[str, ...] = ()

    def new_fds(self, baseline: Resources) -> list[str]:
        """Kinds of fd open now beyond ``baseline`` (sockets, pipes, files), with counts."""
        extra = Counter(self.fd_kinds)
        extra.subtract(Counter(baseline.fd_kinds))
        return [f"{kind} x{n}" for kind, n in extra.most_common() if n > 0]

    def new_tasks(self, baseline: Resources) -> list[str]:
        """Coroutines running now that were not at ``baseline`` (by name, with counts)."""
        extra = Counter(self.task_names)
        extra.subtract(Counter(baseline.task_names))
        return [f"{name} x{n}" for name, n in extra.most_common() if n > 0]

    def leaks_against(self, baseline: Resources) -> dict[str, int]:
        """Each resource above ``baseline`` (or, for free pool slots, below it) by how much;
        empty when everything is back."""
        found = {
            "pool_slots": self.pool_max - self.pool_available,
            "pool_waiters": self.pool_waiting,
            "backends": max(0, self.backends - max(baseline.backends, self.pool_max)),
            "idle_in_transaction": self.idle_in_transaction,
            "tasks": self.tasks - baseline.tasks,
            "fds": self.fds - baseline.fds,
        }
        return {name: delta for name, delta in found.items() if delta > 0}


@dataclass
class Stack:
    """A running service for one profile, its proxies, its owners and an admin DSN."""

    profile: Profile
    settings: Settings
    http: httpx.AsyncClient
    dsn: str
    db_proxy: FaultProxy
    edge_proxy: FaultProxy
    edge_url: str
    owners: list[SeedOwner]
    components: Components
    server: QuietServer
    server_task: asyncio.Task[None]

    @property
    def pool_settings(self) -> PoolSettings:
        return self.components.pool.settings

    def user(self, index: int) -> SeedOwner:
        """The ``index``-th seeded owner (0 is the admin)."""
        return self.owners[index]

    def deadline_s(self) -> float:
        """The profile's promise for one database call: acquire, then the statement,
        then the release (RELIABILITY.md guarantee 2)."""
        pool = self.pool_settings
        command = pool.command_timeout_s or 0.0
        return pool.acquire_timeout_s + command + pool.release_timeout_s

    async def call(
        self, method: str, path: str, owner: SeedOwner | str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request as ``owner`` (a seeded owner or a raw token; None sends no auth)."""
        headers = dict(kwargs.pop("headers", {}))
        if owner is not None:
            token = owner if isinstance(owner, str) else owner.token
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def set_edge_faults(self, **faults: Any) -> None:
        """Replace the edge upstream's own faults (:class:`EdgeFaults` fields)."""
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            response = await client.put(f"{self.edge_url}/functions/v1/faults", json=faults)
            response.raise_for_status()

    async def edge_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            response = await client.get(f"{self.edge_url}/functions/v1/stats")
            response.raise_for_status()
            stats: dict[str, Any] = response.json()
            return stats

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[asyncpg.Connection]:
        """A direct connection to the service's database (not through the proxy)."""
        conn = await connect(self.dsn)
        try:
            yield conn
        finally:
            await conn.close()

    async def backends(self) -> tuple[int, int]:
        """The service's server-side connections and how many are idle in a transaction."""
        async with self.admin() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS n,"
                " count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_tx"
                " FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()",
                self.settings.application_name,
            )
        return int(row["n"]), int(row["idle_tx"])

    async def terminate_backends(self, *, state: str | None = None) -> int:
        """``pg_terminate_backend`` on the service's connections (only those in ``state``
        when given); returns how many were terminated."""
        async with self.admin() as conn:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()"
                " AND ($2::text IS NULL OR state = $2)",
                self.settings.application_name,
                state,
            )
        return int(killed)

    async def resources(self) -> Resources:
        """The service's resources now. Connections through the fault proxies are pooled
        (database pool, edge client lanes) and bounded by their pools; the proxy's part of
        each (a task per direction and one for the link, two sockets) and the client
        socket are the harness's cost of watching, so they are not counted as the
        service's tasks and fds."""
        links = self.db_proxy.stats.active + self.edge_proxy.stats.active
        tasks = [t for t in asyncio.all_tasks() if not coroutine_name(t).startswith("_Link.")]
        stats = self.components.pool.get_stats()
        backends, idle_tx = await self.backends()
        return Resources(
            pool_available=int(stats["pool_available"]),
            pool_max=int(stats["pool_max_size"]),
            pool_waiting=int(stats["pool_waiting"]),
            backends=backends,
            idle_in_transaction=idle_tx,
            tasks=len(tasks),
            fds=len(os.listdir("/proc/self/fd")) - _FDS_PER_LINK * links,
            task_names=tuple(sorted(coroutine_name(t) for t in tasks)),
            fd_kinds=_fd_kinds(),
        )

    async def settled_resources(self, baseline: Resources, *, within_s: float = 5.0) -> Resources:
        """The resources once they are back at ``baseline``, or as they stand after
        ``within_s`` (a scenario's in-flight work needs a moment to drain)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + within_s
        while True:
            now = await self.resources()
            if not now.leaks_against(baseline) or loop.time() >= until:
                return now
            await asyncio.sleep(0.1)

    async def rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of a read-only ``sql`` on the service's database, bypassing the service."""
        async with self.admin() as conn:
            result: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return result

    async def stop(self) -> None:
        """Stop the service (its lifespan drains and closes the pool); bounded."""
        await _stop_server(self.server, self.server_task)


#: A proxied connection's sockets in this process: the client's end, and the proxy's two.
_FDS_PER_LINK = 3


def _fd_kinds() -> tuple[str, ...]:
    """The kind of each open fd: ``socket``, ``pipe``, ``anon_inode:[eventpoll]`` or the
    file's path (a socket's inode says nothing across runs, so it is dropped)."""
    kinds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own fd, too)
        kinds.append(target.split(":[")[0] if target.startswith(("socket:", "pipe:")) else target)
    return tuple(sorted(kinds))


def coroutine_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", type(coro).__name__)


def _upstream(dsn: str) -> tuple[str, int]:
    """Where ``dsn`` connects: a host, or a Unix-socket directory given as ``?host=``
    (the embedded server listens on a socket only), and the port."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query.get("host") or "127.0.0.1"
    return host, parts.port or int(query.get("port", 5432))


def _via(dsn: str, proxy: FaultProxy) -> str:
    """``dsn`` with its host and port replaced by the proxy's TCP address (credentials,
    database and other options kept)."""
    parts = urlsplit(dsn)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{proxy.address}" if credentials else proxy.address
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _components(app: Any) -> Components:
    """The running app's components (the ASGI middlewares wrap the Starlette app)."""
    while app is not None:
        state = getattr(app, "state", None)
        comp = getattr(state, "components", None) if state is not None else None
        if comp is not None:
            return comp  # type: ignore[no-any-return]
        app = getattr(app, "app", None)
    raise RuntimeError("the service started without its components")


@asynccontextmanager
async def running_stack(
    dsn: str,
    profile: Profile,
    *,
    seed_scale: int,
    seed: int,
    settings: Settings | None = None,
) -> AsyncIterator[Stack]:
    """The service for ``profile`` on the seeded database at ``dsn`` (seeded at
    ``seed_scale``/``seed``), with both fault proxies; everything is stopped on exit."""
    base = settings or Settings()
    db_proxy = FaultProxy(*_upstream(dsn), name="postgres")
    async with contextlib.AsyncExitStack() as stack:
        edge_pool = await stack.enter_async_context(
            Pool(dsn, OPTIMIZED_POOL, application_name="sixty_edge")
        )
        edge_app = create_edge_app(make_edge_writer(Repository(edge_pool)), EdgeFaults())
        edge_server, edge_task, edge_url = await start_on_loopback(edge_app, keep_logging=True)
        stack.push_async_callback(_stop_server, edge_server, edge_task)
        edge_parts = urlsplit(edge_url)
        edge_proxy = FaultProxy("127.0.0.1", edge_parts.port or 80, name="edge")
        await stack.enter_async_context(db_proxy)
        await stack.enter_async_context(edge_proxy)
        app = create_app(
            base, profile, dsn=_via(dsn, db_proxy), edge_url=f"http://{edge_proxy.address}"
        )
        server, task, url = await start_on_loopback(
            app, lifespan="on", graceful_shutdown_s=GRACEFUL_SHUTDOWN_S, keep_logging=True
        )
        stack.push_async_callback(_stop_server, server, task)
        http = await stack.enter_async_context(
            # No keep-alive: the client's idle connections would count as the service's
            # open fds and tasks when a scenario checks its resources.
            httpx.AsyncClient(
                base_url=url,
                timeout=CLIENT_TIMEOUT_S,
                trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        )
        yield Stack(
            profile=profile,
            settings=base,
            http=http,
            dsn=dsn,
            db_proxy=db_proxy,
            edge_proxy=edge_proxy,
            edge_url=edge_url,
            owners=seeded_owners(seed_scale, seed),
            components=_components(app),
            server=server,
            server_task=task,
        )


async def _stop_server(server: QuietServer, task: asyncio.Task[None]) -> None:
    if task.done():
        return
    server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
