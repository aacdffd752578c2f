"""FaultProxy: each toxic, down/up and the lifecycle, against an echo server and Postgres.

Timing bounds are loose on purpose (a noisy 2-core machine): each one fails only when the
toxic did not act (a delay missing, a hang instead of an error), never on scheduler noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import psutil
import pytest

from sixty_core.reliability.proxy import (
    Bandwidth,
    BlackHole,
    FaultProxy,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    SlowClose,
)

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A tiny echo server on 127.0.0.1 that closes its side when the client sends EOF."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo_port, name="echo-proxy") as running:
        yield running


@contextlib.asynccontextmanager
async def dial(proxy: FaultProxy) -> AsyncIterator[Stream]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(proxy.host, proxy.port), timeout=2
    )
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def round_trip(stream: Stream, data: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = stream
    started = time.perf_counter()
    writer.write(data)
    received = await asyncio.wait_for(reader.readexactly(len(data)), timeout=5)
    return received, time.perf_counter() - started


async def test_forwards_both_ways_and_counts(proxy: FaultProxy) -> None:
    """Without toxics, bytes go through unchanged and the stats count them."""
    async with dial(proxy) as stream:
        received, _ = await round_trip(stream, b"x" * 1000)
        assert received == b"x" * 1000
        stats = proxy.stats
        assert (stats.accepted, stats.active, stats.refused) == (1, 1, 0)
        assert (stats.bytes_up, stats.bytes_down) == (1000, 1000)
    assert proxy.address == f"127.0.0.1:{proxy.port}"


@pytest.mark.parametrize(
    ("direction", "low_s", "high_s"),
    [("up", 0.145, 0.29), ("down", 0.145, 0.29), ("both", 0.29, 2)],
)
async def test_latency_delays_live_connections(
    proxy: FaultProxy, direction: str, low_s: float, high_s: float
) -> None:
    """Latency set on a live connection delays each chunk in its direction(s) only, and
    clear() takes the delay away again."""
    async with dial(proxy) as stream:
        await round_trip(stream)
        proxy.set_toxics(Latency(ms=150, direction=direction))  # type: ignore[arg-type]
        _, took = await round_trip(stream)
        assert low_s <= took < high_s
        proxy.clear()
        _, took = await round_trip(stream)
        assert took < 0.14


async def test_bandwidth_limits_the_rate(proxy: FaultProxy) -> None:
    """10 kB at 20 kB/s downstream take about half a second and arrive intact."""
    proxy.set_toxics(Bandwidth(bytes_per_s=20_000, direction="down"))
    async with dial(proxy) as stream:
        received, took = await round_trip(stream, bytes(range(250)) * 40)
        assert received == bytes(range(250)) * 40
        assert took >= 0.4


async def test_slicer_trickles_in_small_slices(proxy: FaultProxy) -> None:
    """A 1000-byte answer sliced by 100 bytes every 20 ms arrives in many small reads."""
    proxy.set_toxics(Slicer(chunk_bytes=100, delay_ms=20, direction="down"))
    async with dial(proxy) as (reader, writer):
        started = time.perf_counter()
        writer.write(b"y" * 1000)
        reads: list[bytes] = []
        while sum(map(len, reads)) < 1000:
            reads.append(await asyncio.wait_for(reader.read(65536), timeout=2))
        assert b"".join(reads) == b"y" * 1000
        assert len(reads) >= 5
        assert time.perf_counter() - started >= 0.15


async def test_limit_data_truncates_then_closes(proxy: FaultProxy) -> None:
    """After LimitData(100) the client reads exactly 100 bytes, then end of stream."""
    proxy.set_toxics(LimitData(bytes=100))
    async with dial(proxy) as (reader, writer):
        writer.write(b"z" * 1000)
        body = await asyncio.wait_for(reader.read(), timeout=2)
    assert body == b"z" * 100
    assert proxy.stats.bytes_down == 100


async def test_slow_close_delays_the_close(proxy: FaultProxy) -> None:
    """When the upstream closes, the client sees end of stream only delay_ms later."""
    for toxics, low_s, high_s in (((), 0.0, 0.25), ((SlowClose(delay_ms=300),), 0.28, 2.0)):
        proxy.set_toxics(*toxics)
        async with dial(proxy) as (reader, writer):
            await round_trip((reader, writer))
            started = time.perf_counter()
            writer.write_eof()  # the echo server closes in turn
            assert await asyncio.wait_for(reader.read(), timeout=3) == b""
            assert low_s <= time.perf_counter() - started < high_s


async def test_black_hole_holds_everything_until_cleared(proxy: FaultProxy) -> None:
    """A black hole passes nothing and closes nothing; after clear() new and idle
    connections work, while one that lost data stays silent."""
    async with dial(proxy) as idle, dial(proxy) as busy:
        await round_trip(idle)
        await round_trip(busy)
        proxy.set_toxics(BlackHole())
        async with dial(proxy) as born_in_hole:
            for reader, writer in (busy, born_in_hole):
                writer.write(b"lost")
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(reader.read(1), timeout=0.3)
                assert not reader.at_eof()
            proxy.clear()
            for reader, writer in (busy, born_in_hole):
                writer.write(b"again")
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(reader.read(1), timeout=0.2)
        assert (await round_trip(idle))[0] == b"ping"
        async with dial(proxy) as fresh:
            assert (await round_trip(fresh))[0] == b"ping"


async def test_reset_peer_resets_live_and_new_connections(proxy: FaultProxy) -> None:
    """ResetPeer resets a live connection at once and every new one on accept."""
    async with dial(proxy) as (reader, writer):
        await round_trip((reader, writer))
        proxy.set_toxics(ResetPeer())
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), timeout=1)
    async with dial(proxy) as (reader, writer):
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), timeout=1)
    assert proxy.stats.refused == 1
    proxy.clear()
    async with dial(proxy) as stream:
        assert (await round_trip(stream))[0] == b"ping"


async def test_down_refuses_and_up_listens_on_the_same_port(proxy: FaultProxy) -> None:
    """down() resets live connections and refuses new ones fast; up() reopens the port."""
    port = proxy.port
    async with dial(proxy) as (reader, writer):
        await round_trip((reader, writer))
        proxy.down()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), timeout=1)
    started = time.perf_counter()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection(proxy.host, port), timeout=1)
    assert time.perf_counter() - started < 0.5
    await proxy.up()
    assert proxy.port == port
    async with dial(proxy) as stream:
        assert (await round_trip(stream))[0] == b"ping"


async def test_unreachable_upstream_resets_the_client() -> None:
    """A client of a proxy whose upstream refuses is reset, and counted as refused."""
    async with FaultProxy("127.0.0.1", 1) as proxy, dial(proxy) as (reader, _):
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), timeout=2)
    assert proxy.stats.refused == 1


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Latency(ms=-1), "Latency.ms"),
        (lambda: Latency(ms=float("nan")), "Latency.ms"),
        (lambda: Latency(ms=10, jitter_ms=-1), "Latency.jitter_ms"),
        (lambda: Latency(ms=10, direction="sideways"), "Latency.direction"),  # type: ignore[arg-type]
        (lambda: Bandwidth(bytes_per_s=0), "Bandwidth.bytes_per_s"),
        (lambda: Bandwidth(bytes_per_s=1.5), "Bandwidth.bytes_per_s"),  # type: ignore[arg-type]
        (lambda: Slicer(chunk_bytes=0, delay_ms=1), "Slicer.chunk_bytes"),
        (lambda: Slicer(chunk_bytes=10, delay_ms=-1), "Slicer.delay_ms"),
        (lambda: LimitData(bytes=-1), "LimitData.bytes"),
        (lambda: SlowClose(delay_ms=float("inf")), "SlowClose.delay_ms"),
        (lambda: FaultProxy("127.0.0.1", 70000), "upstream_port"),
        (lambda: FaultProxy("127.0.0.1", 5432, listen_port=-1), "listen_port"),
        (lambda: FaultProxy("127.0.0.1", 5432, connect_timeout_s=0), "connect_timeout_s"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(make: object, field: str) -> None:
    """A bad toxic or proxy argument fails at construction, naming the field."""
    with pytest.raises(ValueError, match=field):
        make()  # type: ignore[operator]


async def test_wrong_transitions_raise(echo_port: int) -> None:
    """start() twice, up() while listening and down() before start() are refused."""
    proxy = FaultProxy("127.0.0.1", echo_port)
    with pytest.raises(RuntimeError, match="cannot go down"):
        proxy.down()
    async with proxy:
        with pytest.raises(RuntimeError, match="cannot start"):
            await proxy.start()
        with pytest.raises(RuntimeError, match="cannot come up"):
            await proxy.up()
    assert await proxy.stop() == []


def _open_sockets(*, local: int = 0, remote: int = 0) -> list[object]:
    """This process's TCP sockets on that local or remote port (TIME_WAIT has no fd)."""
    return [
        c
        for c in psutil.Process().net_connections("tcp")
        if (local and c.laddr[1] == local) or (remote and c.raddr and c.raddr[1] == remote)
    ]


async def test_stop_leaves_no_task_and_no_socket(echo_port: int) -> None:
    """stop() ends every connection (busy, black-holed, trickling) and leaves no task and
    no socket of its own behind."""
    before = asyncio.all_tasks()
    proxy = FaultProxy("127.0.0.1", echo_port, name="leakcheck")
    await proxy.start()
    port = proxy.port
    async with dial(proxy) as plain, dial(proxy) as trickling:
        await round_trip(plain)
        proxy.set_toxics(Slicer(chunk_bytes=1, delay_ms=1000))
        trickling[1].write(b"slow")
        proxy.set_toxics(BlackHole())
        async with dial(proxy):
            await asyncio.sleep(0.1)
            assert proxy.stats.active == 3
            assert len(_open_sockets(local=port)) == 4  # the listener and three accepted
            assert len(_open_sockets(remote=echo_port)) == 2  # the hole's never connected
            assert await proxy.stop() == []
            assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("leakcheck")]
            assert proxy.stats.active == 0
            assert _open_sockets(local=port) == []
            assert _open_sockets(remote=echo_port) == []
    # The echo server's own handlers end once they see the close; give them a moment.
    for _ in range(40):
        if not asyncio.all_tasks() - before - {asyncio.current_task()}:
            break
        await asyncio.sleep(0.05)
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()


# --- Postgres behind the proxy (the embedded server listens on a Unix socket) ----------


@pytest.fixture
async def pg_proxy(db_dsn: str) -> AsyncIterator[tuple[FaultProxy, str]]:
    """A proxy in front of the test database, and a DSN that goes through it."""
    parts = urlsplit(db_dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    async with FaultProxy(host, port, name="pg-proxy") as proxy:
        user = parts.username or "postgres"
        netloc = f"{user}:{parts.password or ''}@{proxy.address}"
        yield proxy, urlunsplit(parts._replace(netloc=netloc, query=""))


async def pg_connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=5, command_timeout=5)


async def test_pg_latency_slows_each_round_trip(pg_proxy: tuple[FaultProxy, str]) -> None:
    """Latency(100) both ways makes a SELECT 1 take at least 0.19 s."""
    proxy, dsn = pg_proxy
    conn = await pg_connect(dsn)
    try:
        proxy.set_toxics(Latency(ms=100))
        started = time.perf_counter()
        assert await conn.fetchval("select 1") == 1
        assert time.perf_counter() - started >= 0.19
    finally:
        proxy.clear()
        await conn.close(timeout=2)


async def test_pg_black_hole_times_out_and_recovers(pg_proxy: tuple[FaultProxy, str]) -> None:
    """In a black hole a query's own timeout fires (no error arrives on its own); after
    clear() a new connection works."""
    proxy, dsn = pg_proxy
    conn = await pg_connect(dsn)
    try:
        proxy.set_toxics(BlackHole())
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await conn.fetchval("select 1", timeout=0.5)
        assert time.perf_counter() - started < 1.5
    finally:
        conn.terminate()
    proxy.clear()
    fresh = await pg_connect(dsn)
    try:
        assert await fresh.fetchval("select 1") == 1
    finally:
        await fresh.close(timeout=2)


async def test_pg_reset_peer_fails_a_running_query_at_once(
    pg_proxy: tuple[FaultProxy, str],
) -> None:
    """ResetPeer breaks a query in flight immediately and refuses new connections."""
    proxy, dsn = pg_proxy
    conn = await pg_connect(dsn)
    try:
        query = asyncio.create_task(conn.fetchval("select pg_sleep(3)"))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        proxy.set_toxics(ResetPeer())
        with pytest.raises(asyncpg.ConnectionDoesNotExistError):
            await asyncio.wait_for(query, timeout=2)
        assert time.perf_counter() - started < 1
        with pytest.raises((ConnectionError, asyncpg.InterfaceError)):
            await pg_connect(dsn)
    finally:
        conn.terminate()
        proxy.clear()


async def test_pg_down_refuses_fast_and_up_recovers(pg_proxy: tuple[FaultProxy, str]) -> None:
    """down() breaks the live connection and refuses connects fast; after up() the same
    DSN connects again."""
    proxy, dsn = pg_proxy
    conn = await pg_connect(dsn)
    try:
        proxy.down()
        with pytest.raises((asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)):
            await conn.fetchval("select 1")
        started = time.perf_counter()
        with pytest.raises(ConnectionRefusedError):
            await pg_connect(dsn)
        assert time.perf_counter() - started < 1
    finally:
        conn.terminate()
    await proxy.up()
    fresh = await pg_connect(dsn)
    try:
        assert await fresh.fetchval("select 1") == 1
    finally:
        await fresh.close(timeout=2)
