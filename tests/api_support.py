"""A running deal API for tests: the real app and edge upstream under uvicorn on loopback,
on a private copy of the seeded database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from sixty_core.api import create_app
from sixty_core.db.pool import OPTIMIZED_POOL, Pool
from sixty_core.db.repository import Repository
from sixty_core.db.seed import SeedOwner, generate
from sixty_core.edge.upstream import EdgeFaults, create_edge_app
from sixty_core.harness.servers import make_edge_writer
from sixty_core.profiles import Profile, resolve_profile
from sixty_core.settings import Settings

TEST_SEED = 42
TEST_SCALE = 1
#: Legacy backoff (1-2-4-8 s) times this: 15 ms in tests.
TEST_TIME_SCALE = 0.001


@dataclass
class Api:
    """A running service: an HTTP client, the seeded owners and their tokens, the DSN."""

    http: httpx.AsyncClient
    edge_url: str
    dsn: str
    profile: Profile
    owners: list[SeedOwner]

    @property
    def admin(self) -> SeedOwner:
        return self.owners[0]

    def user(self, index: int) -> SeedOwner:
        return self.owners[index]

    def auth(self, owner: SeedOwner | str) -> dict[str, str]:
        token = owner if isinstance(owner, str) else owner.token
        return {"Authorization": f"Bearer {token}"}

    async def call(
        self, method: str, path: str, owner: SeedOwner | str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {**(self.auth(owner) if owner is not None else {}), **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def set_edge_faults(self, **faults: Any) -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            response = await client.put(f"{self.edge_url}/functions/v1/faults", json=faults)
            response.raise_for_status()

    async def edge_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            response = await client.get(f"{self.edge_url}/functions/v1/stats")
            response.raise_for_status()
            stats: dict[str, Any] = response.json()
            return stats

    async def own_deal(self, owner: SeedOwner) -> dict[str, Any]:
        """Any one deal of ``owner``."""
        response = await self.call("GET", "/api/deals?limit=1", owner)
        assert response.status_code == 200, response.text
        deals: list[dict[str, Any]] = response.json()["data"]
        assert deals, f"owner {owner.index} has no deals"
        return deals[0]


@asynccontextmanager
async def running_api(
    dsn: str, profile: Profile, serve: Callable[..., Awaitable[str]], **settings: Any
) -> AsyncIterator[Api]:
    """Start the edge upstream and the service for ``profile`` on ``dsn``."""
    async with Pool(dsn, OPTIMIZED_POOL, application_name="sixty_edge") as edge_pool:
        edge_base = await serve(
            create_edge_app(make_edge_writer(Repository(edge_pool)), EdgeFaults())
        )
        edge_url = edge_base
        defaults: dict[str, Any] = {
            "time_scale": TEST_TIME_SCALE,
            "session_monitor_period_s": 3600.0,
            "edge_deadline_s": 2.0,
        }
        config = Settings(**{**defaults, **settings})
        base = await serve(create_app(config, profile, dsn=dsn, edge_url=edge_url), lifespan="on")
        async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as http:
            yield Api(http, edge_url, dsn, profile, generate(TEST_SCALE, TEST_SEED).owners)


def new_id() -> str:
    return str(uuid.uuid4())


def api_fixture(name: str, profiles: list[str]) -> Any:
    """A fixture called ``name`` yielding a running :class:`Api`, once per profile."""

    @pytest_asyncio.fixture(name=name, params=profiles)
    async def running(
        request: pytest.FixtureRequest, db_dsn: str, serve: Callable[..., Awaitable[str]]
    ) -> AsyncIterator[Api]:
        async with running_api(db_dsn, resolve_profile(request.param), serve) as api:
            yield api

    return running
