"""The service's reads, below HTTP: what each profile does for one user's request."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bench.support import BenchStack
from sixty_core.api.components import Components
from sixty_core.auth import User
from sixty_core.benchkit.timing import AsyncBench
from sixty_core.listing import ListQuery

KEYS = ("pool.acquires", "cache.cache_hits", "cache.cache_misses")

Op = Callable[[Components, User, uuid.UUID], Awaitable[Any]]


async def _first_page(comp: Components, user: User, deal_id: uuid.UUID) -> Any:
    return await comp.service.list_deals(user, ListQuery(visible_to=user.visible_owner, limit=50))


async def _get_deal(comp: Components, user: User, deal_id: uuid.UUID) -> Any:
    return await comp.service.get_deal(user, deal_id)


async def _pipeline_stats(comp: Components, user: User, deal_id: uuid.UUID) -> Any:
    return await comp.service.pipeline_stats(user, None)


async def _stages(comp: Components, user: User, deal_id: uuid.UUID) -> Any:
    return await comp.service.stages()


async def _owners(comp: Components, user: User, deal_id: uuid.UUID) -> Any:
    return await comp.service.owners()


#: Each read, and the flag that serves it warm without a statement.
OPS: dict[str, tuple[Op, str]] = {
    "list_deals_first_page": (_first_page, "query_cache"),
    "get_deal": (_get_deal, "query_cache"),
    "pipeline_stats": (_pipeline_stats, "query_cache"),
    "stages": (_stages, "static_cache"),
    "owners": (_owners, "static_cache"),
}


def a_deal_of(stack: BenchStack, comp: Components, user: User) -> uuid.UUID:
    page = stack.run(
        comp.service.list_deals(user, ListQuery(visible_to=user.visible_owner, limit=1))
    )
    assert page.deals, "the benchmark user owns no deal"
    return uuid.UUID(str(page.deals[0]["id"]))


def compare_profiles(abench: AsyncBench, stack: BenchStack, op: Op) -> dict[str, Any]:
    """Time ``op`` for the sales rep in every profile, interleaved; the sides."""
    calls: dict[str, Callable[[], Awaitable[Any]]] = {}
    sources: dict[str, Any] = {}
    for profile in stack.profiles:
        comp = stack.components(profile)
        user = stack.user(profile, stack.rep)
        deal_id = a_deal_of(stack, comp, user)

        async def call(comp: Components = comp, user: User = user, deal_id: uuid.UUID = deal_id):
            return await op(comp, user, deal_id)

        calls[profile] = call
        sources[profile] = {"pool": comp.pool.get_stats, "cache": comp.cache.get_stats}
    abench.compare(calls, ratios=stack.ratios, sources=sources, keys=KEYS)
    sides: dict[str, Any] = abench.benchmark.extra_info["sides"]
    return sides


@pytest.mark.parametrize("name", list(OPS))
def test_read(abench: AsyncBench, stack: BenchStack, name: str) -> None:
    op, flag = OPS[name]
    sides = compare_profiles(abench, stack, op)
    for profile, side in sides.items():
        if stack.has(profile, flag):
            # A warm cached read sends no statement at all.
            assert side["counters"]["statements"] == 0, profile
        else:
            assert side["counters"]["statements"] >= 1, profile
