"""Benchmark fixtures: one event loop and one embedded Postgres for the session, a seeded
template database, a private clone of it per module, and ``abench`` (the async benchmark
fixture of :mod:`sixty_core.benchkit.timing`).

In ``make test`` the suites run once each with ``--benchmark-disable`` (smoke mode: a broken
benchmark fails CI); ``sixty bench`` runs them with timing on.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from bench.support import BenchStack
from sixty_core.benchkit.timing import AsyncBench
from sixty_core.db.migrate import migrate
from sixty_core.db.provision import Database, connect, provision
from sixty_core.db.seed import seed
from sixty_core.db.template import create_database, drop_database
from sixty_core.errors import ConfigError
from sixty_core.profiles import parse_profile_list
from sixty_core.settings import Settings

BENCH_TEMPLATE = "sixty_bench_template"
BENCH_SEED = 42
#: The seed scale of the benchmark data (SIXTY_BENCH_SCALE; 1 = 20 owners, 2,000 deals).
BENCH_SCALE = int(os.environ.get("SIXTY_BENCH_SCALE", "1"))
_clone_ids = itertools.count()
PROFILES_KEY = pytest.StashKey[tuple[str, ...]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sixty-bench", "sixty benchmark suites")
    group.addoption(
        "--sixty-rounds",
        type=int,
        default=15,
        help="rounds of an interleaved comparison (legacy/optimized...); default 15",
    )
    group.addoption(
        "--sixty-profiles",
        default="legacy,optimized",
        help="comma-separated profiles each suite compares; the first is the baseline "
        "of every ratio (default legacy,optimized; any profile sixty serve accepts)",
    )
    group.addoption(
        "--sixty-min-batch-ms",
        type=float,
        default=5.0,
        help="an interleaved batch grows until it takes this long; default 5 ms",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Check ``--sixty-profiles`` once, before anything runs (a UsageError is one line)."""
    try:
        config.stash[PROFILES_KEY] = parse_profile_list(config.getoption("--sixty-profiles"))
    except ConfigError as exc:
        raise pytest.UsageError(f"--sixty-profiles: {exc}") from None


@pytest.fixture(scope="session")
def bench_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The one event loop every benchmark runs on (never set as the thread's current loop,
    so pytest-asyncio's own loops elsewhere in the session are untouched)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture(scope="session")
def bench_pg(bench_loop: asyncio.AbstractEventLoop) -> Iterator[Database]:
    """An embedded Postgres with the seeded template database ``BENCH_TEMPLATE``."""
    stack = AsyncExitStack()
    database: Database = bench_loop.run_until_complete(
        stack.enter_async_context(provision(Settings(db_backend="embedded")))
    )

    async def make_template() -> None:
        dsn = await create_database(database.dsn, BENCH_TEMPLATE)
        conn = await connect(dsn)
        try:
            await migrate(conn)
            await seed(conn, scale=BENCH_SCALE, seed=BENCH_SEED)
        finally:
            await conn.close()

    try:
        bench_loop.run_until_complete(make_template())
        yield database
    finally:
        bench_loop.run_until_complete(stack.aclose())


@pytest.fixture(scope="module")
def stack(
    bench_loop: asyncio.AbstractEventLoop, bench_pg: Database, request: pytest.FixtureRequest
) -> Iterator[BenchStack]:
    """The module's parts on its own clone of the template: a module that writes never
    changes what another module reads."""
    name = f"bench_{os.getpid()}_{next(_clone_ids)}"
    dsn = bench_loop.run_until_complete(
        create_database(bench_pg.dsn, name, template=BENCH_TEMPLATE)
    )
    profiles = request.config.stash[PROFILES_KEY]
    parts = BenchStack(bench_loop, dsn, scale=BENCH_SCALE, seed=BENCH_SEED, profiles=profiles)
    try:
        yield parts
    finally:
        parts.close()
        bench_loop.run_until_complete(drop_database(bench_pg.dsn, name))


@pytest.fixture
def abench(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, request: pytest.FixtureRequest
) -> AsyncBench:
    """``abench(call)`` times a coroutine function; ``abench.compare({...})`` interleaves."""
    return AsyncBench(
        benchmark,
        bench_loop,
        rounds=request.config.getoption("--sixty-rounds"),
        min_batch_s=request.config.getoption("--sixty-min-batch-ms") / 1000.0,
    )
