"""Cache races and bounds, token look-alikes and page limits (RELIABILITY.md C2, C4, C5,
S2, I10): the edges where a cache or a parameter could hand out too much or too old."""

from __future__ import annotations

import asyncio
from typing import Any

from sixty_core.reliability.driving import own_deals, timed
from sixty_core.reliability.outcome import Trial
from sixty_core.reliability.stack import Stack


async def racing_writers(
    stack: Stack, trial: Trial, *, writers: int = 4, rounds: int = 250
) -> None:
    """C2: writers and readers of one deal interleave through the caches; after each
    acknowledged write, its writer's next read is never older than that write (an
    in-flight load that started before the write must not repopulate the cache)."""
    owner = stack.user(1)
    deal = (await own_deals(stack, owner, 1))[0]
    path = f"/api/deals/{deal['id']}"
    stale = 0

    async def writer(w: int) -> None:
        nonlocal stale
        for i in range(rounds):
            status, _, response = await timed(
                stack, trial, "PATCH", path, owner, json={"name": f"c2-{w}-{i}"}
            )
            if status != 200 or response is None:
                trial.expect(status == 200, f"PATCH answered {status}")
                return
            written = response.json()["data"]["version"]
            _, _, read = await timed(stack, trial, "GET", path, owner)
            seen = read.json()["data"]["version"] if read is not None else -1
            stale += seen < written

    async def reader() -> None:
        for _ in range(rounds):
            await stack.call("GET", path, owner)  # keeps loads in flight during the writes

    await asyncio.gather(*(writer(w) for w in range(writers)), reader(), reader())
    trial.record(stale_reads=stale)
    trial.expect(stale == 0, f"{stale} read(s) older than the reader's own acknowledged write")


async def failed_load_not_cached(stack: Stack, trial: Trial) -> None:
    """C4: a read whose load fails (the database refuses) answers 503, and the failure is
    not cached: once the database is back the same read answers 200 at once."""
    owner = stack.user(1)
    deal = (await own_deals(stack, owner, 1))[0]
    path = f"/api/deals/{deal['id']}"
    await stack.call("GET", "/api/stages", owner)  # the session is cached
    stack.db_proxy.down()
    await stack.terminate_backends()
    try:
        failed, _, _ = await timed(stack, trial, "GET", path, owner)
    finally:
        await stack.db_proxy.up()
    trial.expect(failed == 503, f"with the database down a cold read answered {failed}")
    again, _, _ = await timed(stack, trial, "GET", path, owner)
    trial.expect(again == 200, f"after the database came back the same read answered {again}")


async def bounded_caches(stack: Stack, trial: Trial, *, queries: int = 3000) -> None:
    """C5: more distinct list queries than the query cache holds; every cache stays within
    its maxsize, and a byte-bounded one within its bytes."""
    owner = stack.user(1)
    for start in range(0, queries, 50):
        await asyncio.gather(
            *(
                timed(
                    stack, trial, "GET", f"/api/deals?limit={1 + q % 500}&offset={q // 500}", owner
                )
                for q in range(start, min(queries, start + 50))
            )
        )
    namespaces: dict[str, Any] = stack.components.cache.get_stats()["namespaces"]
    for name, ns in namespaces.items():
        trial.expect(
            ns["entries"] <= ns["maxsize"],
            f"cache {name} holds {ns['entries']} entries (maxsize {ns['maxsize']})",
        )
        if ns["max_bytes"] is not None:
            trial.expect(
                ns["bytes"] <= ns["max_bytes"],
                f"cache {name} holds {ns['bytes']} bytes (max_bytes {ns['max_bytes']})",
            )


def _look_alikes(token: str) -> list[str]:
    """Tokens one edit away from ``token``: a prefix, a suffix, one character changed,
    case flipped. (Whitespace around it is not an edit: the header's value is trimmed, as
    RFC 9110 allows.)"""
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return [
        token[:-1],
        token[:16],
        token + "x",
        flipped,
        token.swapcase(),
        token[1:],
        token[::-1],
    ]


async def token_look_alikes(stack: Stack, trial: Trial) -> None:
    """S2: with a user's session cached, tokens one edit away from theirs resolve to no
    one (401): the session key is the whole token, never a prefix."""
    a = stack.user(1)
    await stack.call("GET", "/api/stages", a)  # A's session is in the cache now
    wrong = []
    for token in _look_alikes(a.token):
        status, _, _ = await timed(
            stack,
            trial,
            "GET",
            "/api/deals?limit=1",
            None,
            headers={"Authorization": f"Bearer {token}"},
        )
        if status != 401:
            wrong.append(status)
    trial.record(bad_inputs=trial.requests)
    trial.expect(not wrong, f"tokens one edit from a cached one answered {wrong}")


async def page_limits(stack: Stack, trial: Trial) -> None:
    """I10: page sizes and offsets beyond the caps are refused with 400, never served."""
    owner = stack.user(1)
    bad = ["limit=1000000000", "limit=-1", "limit=0", "offset=-5", "offset=1000000000",
           "limit=1e9", "limit=501", "limit=%00"]  # fmt: skip
    wrong = []
    for query in bad:
        status, _, _ = await timed(stack, trial, "GET", f"/api/deals?{query}", owner)
        if status != 400:
            wrong.append(f"{query}: {status}")
    status, _, response = await timed(stack, trial, "GET", "/api/deals?limit=500", owner)
    served = len(response.json()["data"]) if response is not None and status == 200 else -1
    trial.record(bad_inputs=len(bad))
    trial.expect(not wrong, f"out-of-range pages were not refused: {', '.join(wrong)}")
    trial.expect(0 <= served <= 500, f"the largest page answered {status} with {served} deals")
