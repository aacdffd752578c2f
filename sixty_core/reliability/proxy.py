"""An asyncio TCP fault proxy with Toxiproxy's toxics (RELIABILITY.md §1, P8-P11, E2-E4).

:class:`FaultProxy` listens on 127.0.0.1 and forwards each accepted connection to one
upstream (Postgres, or the edge's HTTP server). Toxiproxy and tc netem are not available
here, so faults are injected in this process: :meth:`FaultProxy.set_toxics` replaces the
active set at run time, and every toxic acts on live connections as well as new ones.

"up" is client to upstream, "down" is upstream to client. Each proxied connection runs one
task per direction that reads a chunk, passes it through the toxics and writes it on:

=============== ===========================================================================
toxic           effect
=============== ===========================================================================
``Latency``     each chunk read is held ``ms`` (+/- uniform ``jitter_ms``) before it goes
                on; a direction is sequential, so chunks queued behind it wait their turn
``Bandwidth``   writes go in slices of 100 ms worth of bytes, each followed by the pause
                that keeps the rate at ``bytes_per_s``
``Slicer``      writes go in slices of ``chunk_bytes``, each followed by ``delay_ms``
``BlackHole``   nothing passes either way and nothing is closed toward the client; data is
                read and discarded, an upstream close is swallowed, and new connections are
                accepted but never reach the upstream (see below for :meth:`clear`)
``ResetPeer``   every live connection is reset (RST, SO_LINGER 0) on both sides when the
                toxic is set; each new connection is reset as soon as it is accepted
``LimitData``   after ``bytes`` forwarded (in ``direction``, summed when "both", counted
                from the moment the toxic set was applied) the connection is closed
``SlowClose``   when the upstream closes, the close reaches the client ``delay_ms`` later
=============== ===========================================================================

After a black hole is cleared, a connection that lost no data (it was idle throughout, as a
pooled connection often is) forwards again, as it would after a short partition. A
connection that lost data, or was accepted inside the hole, stays dead: its byte stream has
a gap, so forwarding the rest would hand the peer a corrupt protocol. It keeps discarding
until its client closes it (which also closes its upstream side) or the proxy stops.

:meth:`FaultProxy.down` closes the listener (connects are refused by the kernel) and resets
every live connection: the database or upstream is gone (P8, P11). :meth:`FaultProxy.up`
listens again on the same port.

Waits the proxy makes on its own behalf are bounded (upstream connect, close, stop); data
waits are not, as on a real link: a pump waits for its peer until the peer acts, a toxic
resets the connection, or :meth:`FaultProxy.stop` ends it.

Stats (:attr:`FaultProxy.stats`, a :class:`ProxyStats` snapshot): ``accepted`` connections
accepted by the listener; ``active`` connections open now; ``refused`` accepted connections
turned away at once (``ResetPeer``, or the upstream could not be reached); ``bytes_up`` and
``bytes_down`` bytes forwarded (after toxics).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import math
import os
import random
import socket
import struct
from dataclasses import dataclass
from types import TracebackType

# The toxics live in toxics.py and are re-exported: callers import them from here.
from sixty_core.reliability.toxics import _TOXIC_TYPES
from sixty_core.reliability.toxics import Bandwidth as Bandwidth
from sixty_core.reliability.toxics import BlackHole as BlackHole
from sixty_core.reliability.toxics import Direction as Direction
from sixty_core.reliability.toxics import Latency as Latency
from sixty_core.reliability.toxics import LimitData as LimitData
from sixty_core.reliability.toxics import ResetPeer as ResetPeer
from sixty_core.reliability.toxics import Slicer as Slicer
from sixty_core.reliability.toxics import SlowClose as SlowClose
from sixty_core.reliability.toxics import Toxic as Toxic

logger = logging.getLogger(__name__)

DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_CLOSE_TIMEOUT_S = 2.0
READ_CHUNK_BYTES = 65536


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of a proxy's counters (see the module docstring)."""

    accepted: int
    active: int
    refused: int
    bytes_up: int
    bytes_down: int


class _State(enum.Enum):
    CREATED = "created"
    LISTENING = "listening"
    DOWN = "down"
    STOPPED = "stopped"


def _covers(direction: Direction, flow: Direction) -> bool:
    return direction == "both" or direction == flow


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close ``writer``'s socket with an RST (SO_LINGER 0), not a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _open_upstream(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # libpq's convention: a host that is a path names the directory of a Unix socket, so a
    # Postgres that listens only there (the embedded backend) can sit behind the proxy too.
    if host.startswith("/"):
        return await asyncio.open_unix_connection(os.path.join(host, f".s.PGSQL.{port}"))
    return await asyncio.open_connection(host, port)


class FaultProxy:
    """Forward ``listen_host:listen_port`` to ``upstream_host:upstream_port``, with toxics.

    ``listen_port=0`` picks a free port at :meth:`start`; :meth:`up` reuses whichever port
    was bound. ``upstream_host`` may be a Unix-socket directory (libpq's convention, the
    socket being ``.s.PGSQL.<upstream_port>`` in it). An upstream that cannot be reached
    within ``connect_timeout_s`` gets the client's connection reset.

    Lifecycle: :meth:`start` once, then :meth:`down`/:meth:`up` any number of times, then
    :meth:`stop` (idempotent); a wrong transition raises :class:`RuntimeError`.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = DEFAULT_LISTEN_HOST,
        listen_port: int = 0,
        name: str = "proxy",
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        for field, port in (("upstream_port", upstream_port), ("listen_port", listen_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"{field} must be an integer in 0..65535, got {port!r}")
        if not (connect_timeout_s > 0 and math.isfinite(connect_timeout_s)):
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s!r}")
        self._upstream = (upstream_host, upstream_port)
        self._host = listen_host
        self._port = listen_port
        self._name = name
        self._connect_timeout_s = connect_timeout_s
        self._state = _State.CREATED
        self._server: asyncio.Server | None = None
        self._toxics: tuple[Toxic, ...] = ()
        self._links: set[_Link] = set()
        self._link_ids = itertools.count(1)
        self._accepted = 0
        self._refused = 0
        self._bytes = {"up": 0, "down": 0}

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start` when none was asked for)."""
        return self._port

    @property
    def address(self) -> str:
        """``host:port``, for a DSN's netloc or a base URL."""
        return f"{self._host}:{self._port}"

    @property
    def toxics(self) -> tuple[Toxic, ...]:
        return self._toxics

    @property
    def stats(self) -> ProxyStats:
        return ProxyStats(
            accepted=self._accepted,
            active=len(self._links),
            refused=self._refused,
            bytes_up=self._bytes["up"],
            bytes_down=self._bytes["down"],
        )

    async def start(self) -> None:
        """Bind and listen; raises RuntimeError unless the proxy is new."""
        if self._state is not _State.CREATED:
            raise RuntimeError(f"proxy {self._name} cannot start: it is {self._state.value}")
        await self._listen()
        self._state = _State.LISTENING

    async def stop(self) -> list[str]:
        """Close the listener and every connection; return the names of tasks that outlived
        the bounded wait (logged; none is expected). A second stop does nothing."""
        if self._state is _State.STOPPED:
            return []
        self._state = _State.STOPPED
        self._close_listener()
        tasks = [link.task for link in self._links if link.task is not None]
        for link in list(self._links):
            link.end(reset=False)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=DEFAULT_CLOSE_TIMEOUT_S)
        stragglers = sorted(t.get_name() for t in tasks if not t.done())
        if stragglers:
            logger.warning("proxy %s: tasks outlived stop: %s", self._name, ", ".join(stragglers))
        return stragglers

    def down(self) -> None:
        """Stop listening (new connects are refused) and reset every live connection."""
        if self._state is _State.DOWN:
            return
        if self._state is not _State.LISTENING:
            raise RuntimeError(f"proxy {self._name} cannot go down: it is {self._state.value}")
        self._state = _State.DOWN
        self._close_listener()
        for link in list(self._links):
            link.end(reset=True)

    async def up(self) -> None:
        """Listen again on the same port after :meth:`down`."""
        if self._state is not _State.DOWN:
            raise RuntimeError(f"proxy {self._name} cannot come up: it is {self._state.value}")
        await self._listen()
        self._state = _State.LISTENING

    def set_toxics(self, *toxics: Toxic) -> None:
        """Replace the active toxics (live connections included); ``ResetPeer`` resets
        every live connection at once. Several toxics of one kind all apply, in order."""
        for toxic in toxics:
            if not isinstance(toxic, _TOXIC_TYPES):
                raise TypeError(f"not a toxic: {toxic!r}")
        self._toxics = tuple(toxics)
        if any(isinstance(t, ResetPeer) for t in toxics):
            for link in list(self._links):
                link.end(reset=True)

    def clear(self) -> None:
        """Remove every toxic (see the module docstring for connections a hole damaged)."""
        self._toxics = ()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _listen(self) -> None:
        # The callback is a plain function, so this class creates, names and tracks each
        # connection's task instead of asyncio creating an anonymous one.
        self._server = await asyncio.start_server(
            self._on_accept, self._host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    def _close_listener(self) -> None:
        # Server.close() closes the listening sockets synchronously: a connect made after
        # this returns is refused. Not awaiting wait_closed(): from 3.12 it waits for every
        # connection, and those are ended by the caller.
        if self._server is not None:
            self._server.close()
            self._server = None

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        if self._state is not _State.LISTENING or any(
            isinstance(t, ResetPeer) for t in self._toxics
        ):
            self._refused += 1
            _reset(writer)
            return
        link = _Link(self, f"{self._name}-link-{next(self._link_ids)}", reader, writer)
        link.damaged = any(isinstance(t, BlackHole) for t in self._toxics)
        self._links.add(link)
        link.task = asyncio.get_running_loop().create_task(link.run(), name=link.name)
        link.task.add_done_callback(lambda task: self._on_link_done(link, task))

    def _on_link_done(self, link: _Link, task: asyncio.Task[None]) -> None:
        self._links.discard(link)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("proxy %s: %s failed", self._name, task.get_name(), exc_info=exc)


class _Link:
    """One proxied connection: the client's stream, the upstream's, and two pumps."""

    def __init__(
        self,
        proxy: FaultProxy,
        name: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.name = name
        self.client = (reader, writer)
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        # Data was discarded in a black hole (or the link was born in one): never forward
        # again, since the stream now has a gap.
        self.damaged = False
        self.ended = False
        self.limit_toxics: tuple[Toxic, ...] | None = None
        self.limit_sent = 0

    def end(self, *, reset: bool) -> None:
        """Close both sides now: with an RST when ``reset``, else a plain abort."""
        self.ended = True
        for writer in (self.client[1], self.upstream_writer):
            if reset:
                _reset(writer)
            elif writer is not None:
                writer.transport.abort()

    def holed(self) -> bool:
        if not self.damaged and any(isinstance(t, BlackHole) for t in self.proxy._toxics):
            self.damaged = True
        return self.damaged

    async def run(self) -> None:
        reader, writer = self.client
        try:
            if self.damaged:  # born in a black hole: the upstream never hears of it
                while await reader.read(READ_CHUNK_BYTES):
                    pass
                return
            try:
                async with asyncio.timeout(self.proxy._connect_timeout_s):
                    up_reader, self.upstream_writer = await _open_upstream(*self.proxy._upstream)
            except (OSError, TimeoutError):
                self.proxy._refused += 1
                self.end(reset=True)
                return
            if self.ended:  # down(), stop() or ResetPeer came during the connect
                self.end(reset=True)
                return
            name, loop = self.name, asyncio.get_running_loop()
            pumps = [
                loop.create_task(self._pump(reader, self.upstream_writer, "up"), name=f"{name}-up"),
                loop.create_task(self._pump(up_reader, writer, "down"), name=f"{name}-down"),
            ]
            try:
                await asyncio.gather(*pumps)
            finally:
                for pump in pumps:  # only a pump's own bug leaves its sibling running
                    pump.cancel()
        except (ConnectionError, OSError):
            pass
        finally:
            await self._close()

    async def _close(self) -> None:
        """Close both sides, flushing what is buffered, within a bounded wait; then abort."""
        writers = [w for w in (self.client[1], self.upstream_writer) if w is not None]
        for writer in writers:
            writer.close()
        try:
            async with asyncio.timeout(DEFAULT_CLOSE_TIMEOUT_S):
                for writer in writers:
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
        except TimeoutError:
            pass
        finally:  # also when cancelled here: a peer that never reads cannot hold a socket
            self.end(reset=False)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flow: Direction
    ) -> None:
        try:
            while data := await reader.read(READ_CHUNK_BYTES):
                if not await self._forward(data, writer, flow):
                    return
        except (ConnectionError, OSError):
            if flow == "up" or not self.holed():
                self.end(reset=True)  # pass the reset on, as the network would
            return
        if self.ended:
            return
        if flow == "up" and self.holed():
            # The client gave up: take its upstream side along, so a hole never holds an
            # upstream connection longer than its client.
            self.end(reset=False)
            return
        if flow == "down":
            if self.holed():
                return  # swallow the upstream's close: the client keeps waiting
            delay_ms = sum(t.delay_ms for t in self.proxy._toxics if isinstance(t, SlowClose))
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()

    async def _forward(self, data: bytes, writer: asyncio.StreamWriter, flow: Direction) -> bool:
        """Pass one chunk through the toxics; False once the connection was closed."""
        if self.holed():
            return True
        toxics = self.proxy._toxics
        held_ms = sum(
            max(0.0, t.ms + random.uniform(-t.jitter_ms, t.jitter_ms))
            for t in toxics
            if isinstance(t, Latency) and _covers(t.direction, flow)
        )
        if held_ms:
            await asyncio.sleep(held_ms / 1000)
            toxics = self.proxy._toxics  # the set may have changed meanwhile
            if self.holed():
                return True
        limits = [
            t.bytes for t in toxics if isinstance(t, LimitData) and _covers(t.direction, flow)
        ]
        if toxics is not self.limit_toxics:  # a new set_toxics() starts a new budget
            self.limit_toxics, self.limit_sent = toxics, 0
        cut = bool(limits) and self.limit_sent + len(data) >= min(limits)
        if cut:
            data = data[: max(0, min(limits) - self.limit_sent)]
        rates = [
            t.bytes_per_s for t in toxics if isinstance(t, Bandwidth) and _covers(t.direction, flow)
        ]
        slicers = [t for t in toxics if isinstance(t, Slicer) and _covers(t.direction, flow)]
        step = max(1, len(data))
        if rates:
            step = min(step, max(1, min(rates) // 10))
        if slicers:
            step = min(step, *(s.chunk_bytes for s in slicers))
        pause_s = sum(s.delay_ms for s in slicers) / 1000
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            writer.write(piece)
            await writer.drain()
            self.proxy._bytes[flow] += len(piece)
            if limits:
                self.limit_sent += len(piece)
            if rates or pause_s:
                await asyncio.sleep(pause_s + (len(piece) / min(rates) if rates else 0.0))
        if cut:
            # Closed, not reset, so the client reads the truncated body, then end of stream;
            # run() closes both sides (flushing first) once this pump returns.
            self.ended = True
            other = self.upstream_writer if writer is self.client[1] else self.client[1]
            if other is not None:
                other.transport.abort()
            writer.close()
            return False
        return True
