"""The service's writes, below HTTP: update a deal and move it to another stage."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from bench.support import BenchStack
from bench.test_service import KEYS, a_deal_of
from sixty_core.api.components import Components
from sixty_core.auth import User
from sixty_core.benchkit.timing import AsyncBench
from sixty_core.models import DealUpdate


def _compare(abench: AsyncBench, stack: BenchStack, write: Any) -> dict[str, Any]:
    calls: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for profile in stack.profiles:
        comp = stack.components(profile)
        user = stack.user(profile, stack.rep)
        deal_id = a_deal_of(stack, comp, user)
        calls[profile] = write(comp, user, deal_id)
        sources[profile] = {"pool": comp.pool.get_stats, "cache": comp.cache.get_stats}
    abench.compare(calls, ratios=stack.ratios, sources=sources, keys=KEYS)
    sides: dict[str, Any] = abench.benchmark.extra_info["sides"]
    return sides


def test_update_deal(abench: AsyncBench, stack: BenchStack) -> None:
    def write(comp: Components, user: User, deal_id: uuid.UUID) -> Any:
        probabilities = itertools.cycle((10, 20, 30))  # every call really changes the row

        async def update() -> Any:
            body = DealUpdate(probability=next(probabilities))
            return await comp.service.update_deal(user, deal_id, body)

        return update

    sides = _compare(abench, stack, write)
    assert all(side["counters"]["statements"] >= 1 for side in sides.values())


def test_move_deal(abench: AsyncBench, stack: BenchStack) -> None:
    def write(comp: Components, user: User, deal_id: uuid.UUID) -> Any:
        stages = [uuid.UUID(str(s["id"])) for s in stack.run(comp.service.stages())]
        targets = itertools.cycle(stages)

        async def move() -> Any:
            return await comp.service.move_deal(user, deal_id, next(targets))

        return move

    sides = _compare(abench, stack, write)
    assert all(side["counters"]["statements"] >= 1 for side in sides.values())
