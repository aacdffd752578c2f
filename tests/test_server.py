"""Hostile and broken clients on a raw socket: bounded heads and bodies, hang-ups counted.

Each case talks HTTP/1.1 by hand to the real service under uvicorn (sixty_core.api.server)
and bounds its own wait, so a server that holds the connection fails the test instead of
hanging it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest
import uvloop

from sixty_core.api.server import MAX_HEAD_BYTES, MAX_HEADERS, server_loop_factory
from sixty_core.errors import ConfigError
from sixty_core.profiles import OPTIMIZED
from sixty_core.settings import SERVER_LOOP_ENV
from tests.api_support import Api, api_fixture, running_api

api = api_fixture("api", ["optimized"])


async def exchange(api: Api, raw: bytes, *, wait_s: float = 10.0) -> bytes:
    """Send ``raw`` on a fresh connection; return everything the server answers before it
    closes the connection (bounded by ``wait_s``)."""
    url = urlsplit(str(api.http.base_url))
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(wait_s):
            return await reader.read()
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def head(path: str, token: str, *extra: bytes) -> bytes:
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: t", f"Authorization: Bearer {token}".encode()]
    return b"\r\n".join([*lines, *extra, b"Connection: close", b"", b""])


async def test_a_request_head_over_16_kib_is_refused_with_431(api: Api) -> None:
    """One 1 MB header: 431 and the connection is closed, not buffered."""
    answer = await exchange(api, head("/api/stages", api.user(1).token, b"X-Big: " + b"a" * 2**20))
    assert status_of(answer) == 431
    assert str(MAX_HEAD_BYTES).encode() in answer


async def test_too_many_header_fields_are_refused_with_431(api: Api) -> None:
    """2,000 small headers: 431."""
    fields = [f"X-H{i}: v".encode() for i in range(2000)]
    answer = await exchange(api, head("/api/stages", api.user(1).token, *fields))
    assert status_of(answer) == 431
    assert f"more than {MAX_HEADERS} header fields".encode() in answer


async def test_a_normal_head_still_passes(api: Api) -> None:
    """Ninety headers and a long cursor are within the bounds."""
    fields = [f"X-H{i}: v".encode() for i in range(90)]
    answer = await exchange(api, head("/api/deals?limit=1", api.user(1).token, *fields))
    assert status_of(answer) == 200


async def test_a_body_that_never_arrives_is_a_408(
    db_dsn: str, serve: Callable[..., Awaitable[str]]
) -> None:
    """Content-Length promises more than is sent: the route answers 408 after the body
    deadline instead of holding the connection."""
    async with running_api(db_dsn, OPTIMIZED, serve, body_read_timeout_s=0.5) as api:
        owner = api.user(1)
        raw = (
            b"POST /api/deals HTTP/1.1\r\nHost: t\r\n"
            + f"Authorization: Bearer {owner.token}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":'
        )
        answer = await exchange(api, raw, wait_s=10)
        assert status_of(answer) == 408
        assert b"did not arrive within 0.5 s" in answer


async def test_a_client_hanging_up_mid_body_is_counted_not_a_traceback(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """The client closes after half its body: one line at INFO, no 'unhandled error' and
    no traceback, and /metrics counts it."""
    owner = api.user(1)
    url = urlsplit(str(api.http.base_url))
    with caplog.at_level(logging.INFO):
        _, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(
            b"POST /api/deals HTTP/1.1\r\nHost: t\r\n"
            + f"Authorization: Bearer {owner.token}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":'
        )
        await writer.drain()
        await asyncio.sleep(0.2)  # let the route start reading the body
        writer.close()
        async with asyncio.timeout(10):
            while True:  # the server sees the hang-up asynchronously: poll, bounded
                metrics = (await api.call("GET", "/metrics")).text
                if "sixty_client_disconnects_total 1.0" in metrics:
                    break
                await asyncio.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records]
    assert any("client disconnected while sending POST /api/deals" in m for m in messages)
    assert not any("unhandled" in m.lower() for m in messages), messages
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize(
    ("value", "uses_uvloop"), [(None, True), ("auto", True), ("UVLOOP", True), ("asyncio", False)]
)
def test_server_processes_run_on_uvloop_unless_told_otherwise(
    value: str | None, uses_uvloop: bool
) -> None:
    environ = {} if value is None else {SERVER_LOOP_ENV: value}
    loop = server_loop_factory(environ)()
    try:
        assert isinstance(loop, uvloop.Loop) is uses_uvloop
    finally:
        loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    loop = server_loop_factory({})()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        server_loop_factory({SERVER_LOOP_ENV: "uvloop"})


def test_a_server_process_refuses_an_unknown_loop_before_serving() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sixty_core.harness.servers",
            "bare",
            "--app",
            "hello",
            "--port",
            "1",
        ],
        env={**os.environ, SERVER_LOOP_ENV: "trio"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SIXTY_SERVER_LOOP='trio': expected one of auto, uvloop, asyncio" in done.stderr
