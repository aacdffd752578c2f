"""Static data (stages, owners, companies): queried every time, or cached.

``static_cache`` off (legacy): every request that needs stages, owners or companies
queries them, as the original's hooks did (ORIGINAL_SYSTEM.md §2.1 "Stages": no caching).
On (optimized): an LRU+TTL cache with stages 1 h and owners/companies 15 min (the
namespaces' TTLs in :mod:`sixty_core.cache`, after §1.8), preloaded at start, loaded
single-flight. The service has no endpoint that writes these tables, so nothing here
invalidates them: a change made elsewhere (a migration, an admin's SQL) shows once its TTL
runs out. Entries are tagged ``table:<name>`` so a future write path can drop them with
``Cache.invalidate_tags``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sixty_core.cache import Cache
from sixty_core.db.repository import Repository
from sixty_core.types import Row


class StaticData(Protocol):
    """Where the service gets stages, owners and companies."""

    async def stages(self) -> Sequence[Row]: ...

    async def owners(self) -> Sequence[Row]: ...

    async def companies(self) -> Sequence[Row]: ...

    async def preload(self) -> None: ...


class DirectStaticData:
    """Every call queries Postgres."""

    def __init__(self, repository: Repository) -> None:
        self._repo = repository

    async def stages(self) -> Sequence[Row]:
        return await self._repo.list_stages()

    async def owners(self) -> Sequence[Row]:
        return await self._repo.list_owners()

    async def companies(self) -> Sequence[Row]:
        return await self._repo.list_companies()

    async def preload(self) -> None:
        return None


class CachedStaticData:
    """Static data served from :class:`Cache` namespaces ``stages``, ``owners``,
    ``companies`` (one entry each: the whole, small, list)."""

    _KEY = "all"

    def __init__(self, repository: Repository, cache: Cache) -> None:
        self._repo = repository
        self._cache = cache

    async def stages(self) -> Sequence[Row]:
        rows: Sequence[Row] = await self._cache.get_or_load(
            "stages", self._KEY, self._repo.list_stages, tags=("table:deal_stages",)
        )
        return rows

    async def owners(self) -> Sequence[Row]:
        rows: Sequence[Row] = await self._cache.get_or_load(
            "owners", self._KEY, self._repo.list_owners, tags=("table:profiles",)
        )
        return rows

    async def companies(self) -> Sequence[Row]:
        rows: Sequence[Row] = await self._cache.get_or_load(
            "companies", self._KEY, self._repo.list_companies, tags=("table:companies",)
        )
        return rows

    async def preload(self) -> None:
        """Load every namespace now, so the first requests do not pay for it."""
        await self.stages()
        await self.owners()
        await self.companies()
