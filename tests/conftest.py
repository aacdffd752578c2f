"""Shared fixtures: one embedded Postgres per test session, a seeded template database,
and a fresh clone of it per test (CREATE DATABASE ... TEMPLATE is a file copy: cheap)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import asyncpg
import pytest
import pytest_asyncio
from starlette.types import ASGIApp

from sixty_core.api.server import QuietServer, start_on_loopback
from sixty_core.db.migrate import migrate
from sixty_core.db.provision import Database, connect, provision
from sixty_core.db.seed import seed
from sixty_core.db.template import create_database, drop_database
from sixty_core.settings import Settings

TEMPLATE_DB = "sixty_template"
TEST_SEED = 42
TEST_SCALE = 1
_clone_ids = itertools.count()


@dataclass
class FakeClock:
    """A monotonic clock that only moves when a test calls :meth:`tick`."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_server() -> AsyncIterator[Database]:
    """One embedded Postgres for the whole session; its DSN points at the admin database."""
    async with provision(Settings(db_backend="embedded")) as database:
        yield database


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_db(pg_server: Database) -> str:
    """A migrated database seeded at (TEST_SCALE, TEST_SEED), used only as a template."""
    dsn = await create_database(pg_server.dsn, TEMPLATE_DB)
    conn = await connect(dsn)
    try:
        await migrate(conn)
        await seed(conn, scale=TEST_SCALE, seed=TEST_SEED)
    finally:
        await conn.close()
    return TEMPLATE_DB


@pytest_asyncio.fixture(loop_scope="session")
async def db_dsn(pg_server: Database, template_db: str) -> AsyncIterator[str]:
    """A DSN to a fresh, private copy of the seeded template database."""
    name = f"t{os.getpid()}_{next(_clone_ids)}"
    dsn = await create_database(pg_server.dsn, name, template=template_db)
    yield dsn
    await drop_database(pg_server.dsn, name)


@pytest_asyncio.fixture(loop_scope="session")
async def empty_db_dsn(pg_server: Database) -> AsyncIterator[str]:
    """A DSN to a fresh empty database (no schema)."""
    name = f"e{os.getpid()}_{next(_clone_ids)}"
    dsn = await create_database(pg_server.dsn, name)
    yield dsn
    await drop_database(pg_server.dsn, name)


@pytest_asyncio.fixture(loop_scope="session")
async def db_conn(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test's private seeded database."""
    conn = await connect(db_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start ASGI apps under real uvicorn servers on free 127.0.0.1 ports; stop them after."""
    running: list[tuple[QuietServer, asyncio.Task[None]]] = []

    async def start(app: ASGIApp, lifespan: Literal["auto", "on", "off"] = "off") -> str:
        server, task, url = await start_on_loopback(app, lifespan=lifespan)
        running.append((server, task))
        return url

    yield start
    for server, _ in running:
        server.should_exit = True
    async with asyncio.timeout(15):
        await asyncio.gather(*(task for _, task in running))


def need_docker() -> None:
    """Skip the calling test when no Docker engine answers, but fail it where CI promised
    one (``SIXTY_REQUIRE_DOCKER=1``, set by scripts/ci-docker.sh): the container backend
    must never pass CI untested."""
    from sixty_core.db._container import docker_available

    if docker_available():
        return
    if os.environ.get("SIXTY_REQUIRE_DOCKER") == "1":
        pytest.fail("SIXTY_REQUIRE_DOCKER=1, yet no Docker engine answers")
    pytest.skip("no Docker engine reachable (CI starts one: scripts/ci-docker.sh)")
