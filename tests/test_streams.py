"""Open event streams end with their token and are capped per user (sixty_core.streams)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from sixty_core.db.provision import connect
from sixty_core.errors import TooManyRequestsError
from sixty_core.streams import OpenStreams
from tests.api_support import Api, api_fixture

api = api_fixture("api", ["legacy", "optimized"])


@contextlib.asynccontextmanager
async def stream(api: Api, owner: object) -> AsyncIterator[AsyncIterator[str]]:
    """An open /api/deals/stream as an iterator of its lines (past the greeting)."""
    async with api.http.stream("GET", "/api/deals/stream", headers=api.auth(owner)) as resp:  # type: ignore[arg-type]
        assert resp.status_code == 200, await resp.aread()
        lines = resp.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        yield lines


async def end_reason(lines: AsyncIterator[str]) -> str:
    """Read until the server's `end` event; its reason."""
    async for line in lines:
        if line == "event: end":
            data = await anext(lines)
            return str(json.loads(data.removeprefix("data:"))["reason"])
    raise AssertionError("the stream closed without an end event")


async def test_logout_ends_the_tokens_open_stream(api: Api) -> None:
    """After POST /api/auth/logout, the token's open stream ends at once with reason
    'logged out' (it used to go on delivering events)."""
    owner = api.user(2)
    async with stream(api, owner) as lines:
        assert (await api.call("POST", "/api/auth/logout", owner)).status_code == 200
        async with asyncio.timeout(5):
            assert await end_reason(lines) == "logged out"
            rest = [line async for line in lines]  # the response is over: this ends
        assert not any(rest), rest
    assert (await api.call("GET", "/api/stages", owner)).status_code == 401


async def test_a_stream_ends_when_its_session_expires(api: Api) -> None:
    """A session that expires while its stream is open ends the stream at the expiry."""
    owner = api.user(3)
    conn = await connect(api.dsn)
    try:
        await conn.execute(
            "UPDATE sessions SET expires_at = now() + interval '1.5 seconds' WHERE user_id = $1",
            uuid.UUID(owner.id),
        )
    finally:
        await conn.close()
    async with stream(api, owner) as lines, asyncio.timeout(10):
        assert await end_reason(lines) == "session expired"


async def test_an_eleventh_stream_of_one_user_is_refused(api: Api) -> None:
    """Ten open streams per user; the eleventh is a 429 with Retry-After, and closing
    one makes room again. Another user is not affected."""
    owner = api.user(4)
    async with contextlib.AsyncExitStack() as open_streams:
        for _ in range(10):
            await open_streams.enter_async_context(stream(api, owner))
        refused = await api.call("GET", "/api/deals/stream", owner)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_requests"
        assert int(refused.headers["retry-after"]) >= 1
        async with stream(api, api.user(1)):
            pass  # someone else's stream still opens
    async with asyncio.timeout(10):
        while True:  # the server notices the closes asynchronously: poll, bounded
            async with api.http.stream(
                "GET", "/api/deals/stream", headers=api.auth(owner)
            ) as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.05)


def test_open_streams_counts_and_forgets() -> None:
    """The registry's bookkeeping: a cap per user, end_token wakes every stream of a
    token, close forgets (twice is harmless)."""
    registry = OpenStreams(max_per_user=2)
    user = uuid.uuid4()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    queues = [asyncio.Queue[object](maxsize=1) for _ in range(2)]
    for q in queues:
        q.put_nowait("full")
    tickets = [registry.open("t", user, expires, q) for q in queues]
    with pytest.raises(TooManyRequestsError, match="at most 2 per user"):
        registry.open("t2", user, expires, asyncio.Queue())
    assert registry.end_token("t", "logged out") == 2
    assert all(t.ended == "logged out" for t in tickets)
    assert all(q.qsize() == 1 for q in queues)  # a full queue made room for the wake-up
    for ticket in tickets:
        registry.close(ticket)
        registry.close(ticket)
    assert registry.get_stats() == {
        "streams_open": 0,
        "streams_refused": 1,
        "streams_ended_by_logout": 2,
    }
    registry.open("t2", user, expires, asyncio.Queue())


async def test_stream_requires_a_token(api: Api) -> None:
    response = await api.http.get("/api/deals/stream")
    assert response.status_code == 401
    assert isinstance(response, httpx.Response)
