"""Static data (stages, owners, companies): queried every time, or cached.

``static_cache`` off (legacy): every request that needs stages, owners or companies
queries them, as the original's hooks did. On (optimized): an LRU+TTL cache with stages
1 h and owners/companies 15 min (the namespaces' TTLs in :mod:`sixty_core.cache`),
preloaded at start, loaded single-flight, invalidated by writes to those tables.
"""

from __future__ import annotations

from typing import Protocol

from sixty_core.cache import Cache
from sixty_core.db.repository import Repository
from sixty_core.types import Row


class StaticData(Protocol):
    """Where the service gets stages, owners and companies."""

    async def stages(self) -> list[Row]: ...

    async def owners(self) -> list[Row]: ...

    async def companies(self) -> list[Row]: ...

    async def preload(self) -> None: ...

    def invalidate(self, table: str) -> None: ...


class DirectStaticData:
    """Every call queries Postgres."""

    def __init__(self, repository: Repository) -> None:
        self._repo = repository

    async def stages(self) -> list[Row]:
        return await self._repo.list_stages()

    async def owners(self) -> list[Row]:
        return await self._repo.list_owners()

    async def companies(self) -> list[Row]:
        return await self._repo.list_companies()

    async def preload(self) -> None:
        return None

    def invalidate(self, table: str) -> None:
        return None


class CachedStaticData:
    """Static data served from :class:`Cache` namespaces ``stages``, ``owners``,
    ``companies`` (one entry each: the whole, small, list)."""

    _KEY = "all"

    def __init__(self, repository: Repository, cache: Cache) -> None:
        self._repo = repository
        self._cache = cache

    async def stages(self) -> list[Row]:
        rows: list[Row] = await self._cache.get_or_load(
            "stages", self._KEY, self._repo.list_stages, tags=("table:deal_stages",)
        )
        return rows

    async def owners(self) -> list[Row]:
        rows: list[Row] = await self._cache.get_or_load(
            "owners", self._KEY, self._repo.list_owners, tags=("table:profiles",)
        )
        return rows

    async def companies(self) -> list[Row]:
        rows: list[Row] = await self._cache.get_or_load(
            "companies", self._KEY, self._repo.list_companies, tags=("table:companies",)
        )
        return rows

    async def preload(self) -> None:
        """Load every namespace now, so the first requests do not pay for it."""
        await self.stages()
        await self.owners()
        await self.companies()

    def invalidate(self, table: str) -> None:
        """Drop what a write to ``table`` made stale."""
        self._cache.invalidate_tags(f"table:{table}")
