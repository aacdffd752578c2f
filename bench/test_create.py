"""Creating a deal through the API, profile against profile, under the same edge faults
(:data:`bench.support.BENCH_EDGE_FAULTS`: 10% failures, lognormal latency, time-scaled)."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec

from bench.support import BenchStack
from sixty_core.benchkit.timing import AsyncBench

KEYS = ("pool.acquires", "http.bytes_received")
CREATE_BATCH_S = 0.1


def test_create_deal(abench: AsyncBench, stack: BenchStack) -> None:
    owner = stack.rep
    numbers = itertools.count()
    statuses: dict[str, list[int]] = {}
    calls: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for profile in stack.profiles:
        app = stack.app(profile)
        comp = stack.components(profile)
        seen = statuses.setdefault(profile, [])

        async def create(app: Any = app, seen: list[int] = seen) -> int:
            body = msgspec.json.encode(
                {"name": f"bench deal {next(numbers)}", "company": "Bench", "owner_id": owner.id}
            )
            reply = await app("POST", "/api/deals", headers=stack.bearer(owner), body=body)
            seen.append(reply.status)
            return reply.status

        calls[profile] = create
        sources[profile] = {
            "http": lambda app=app: {"bytes_received": app.bytes_received},
            "pool": comp.pool.get_stats,
        }
    # A create's time depends on the faults it drew (a legacy retry waits 20-40 ms here):
    # rounds of at least CREATE_BATCH_S average over many draws, so the ratio is stable.
    abench.compare(
        calls, ratios=stack.ratios, sources=sources, keys=KEYS, min_batch_s=CREATE_BATCH_S
    )
    for profile, seen in statuses.items():
        assert seen.count(201) > 0, f"{profile}: no create succeeded: {seen}"
        if stack.has(profile, "robust_create"):
            # The robust create absorbs edge failures with its fallback: never a 5xx.
            assert all(status < 500 for status in seen), f"{profile}: {seen}"
