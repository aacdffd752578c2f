"""How the service is served: uvicorn with httptools, and bounds on what a client may send.

uvicorn's httptools protocol (the fast one, DESIGN.md §8) puts no limit on a request's head:
it accepts a 1 MB header or 2,000 headers and waits for a slow head without a deadline.
:class:`BoundedHttpToolsProtocol` adds three bounds before the app sees a request:

- the request line plus headers may be at most :data:`MAX_HEAD_BYTES` (else 431);
- at most :data:`MAX_HEADERS` header fields (else 431);
- the head must arrive within :data:`HEAD_TIMEOUT_S` of its first byte (else 408).

Each refusal answers once and closes the connection. The close lingers (as nginx's
``lingering_close`` does): the write side is shut, and what the client still sends is
read and dropped for up to :data:`LINGER_S`, because closing a socket with unread input
sends a reset that can destroy the answer before the client reads it. The body's own
deadline is the app's (``Settings.body_read_timeout_s``, a 408 from the route that reads
it), because only the route knows whether it wants a body at all.

This subclasses uvicorn's protocol class (``uvicorn.Config(http=...)`` accepts one), the
one place the head passes through; the h11 protocol has only a size bound and is several
times slower.

The server processes run on uvloop when it is installed (:func:`server_loop_factory`), as
``uvicorn.run`` would: they call ``Server.serve()`` inside a loop of their own, and uvicorn
picks its loop only in ``Server.run()``, so without this they ran on asyncio's own loop.
Measured with wrk against the same servers on both loops side by side (three runs of 4-6
alternating rounds, 32 connections): the uncached deal read answered 13-26% more requests
per second on uvloop in every run (asyncpg's I/O); the bare hello and the cached reads
moved between -8% and +47%, within this machine's noise. ``SIXTY_SERVER_LOOP=asyncio``
runs them on asyncio's loop, to measure both. A server traced by memray runs on asyncio's
loop (:func:`sixty_core.harness.servers.spawn_server` sees to it): under uvloop, memray's
stacks lost the frames of what the loop's C callbacks ran (a traced legacy run named no
site for either of its two leaks; on asyncio it names both).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sixty_core.errors import ConfigError
from sixty_core.settings import SERVER_LOOP_ENV

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT_S = 10.0
#: How long a refused connection keeps draining the client's input before closing.
LINGER_S = 2.0
GRACEFUL_SHUTDOWN_S = 10
SERVER_LOOPS = ("auto", "uvloop", "asyncio")


def server_loop_factory(environ: Mapping[str, str]) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop a server process runs on, from ``SIXTY_SERVER_LOOP`` in ``environ``:
    ``auto`` (or unset) is uvloop when it is installed (``uvicorn[standard]`` installs it),
    else asyncio's own; ``uvloop`` insists on it; ``asyncio`` is the standard library's.
    ConfigError for another value, or for ``uvloop`` when it is not installed."""
    choice = environ.get(SERVER_LOOP_ENV, "").strip().lower() or "auto"
    if choice not in SERVER_LOOPS:
        raise ConfigError(
            f"{SERVER_LOOP_ENV}={environ[SERVER_LOOP_ENV]!r}: expected one of "
            + ", ".join(SERVER_LOOPS)
        )
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                f"{SERVER_LOOP_ENV}=uvloop, but uvloop is not installed (pip install uvloop)"
            ) from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _HeadRefused(Exception):
    """Raised inside a parser callback; uvicorn then calls send_400_response."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on the request head (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parsed_head_bytes = 0  # request line and complete header fields
        self._pending_head_bytes = 0  # chunks read while the head was still incomplete
        self._head_fields = 0
        self._in_head = False
        self._refusal: tuple[int, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False

    # -- counting the head ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._parsed_head_bytes = self._pending_head_bytes = self._head_fields = 0
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > MAX_HEADERS:
            self._refuse_in_parser(431, f"more than {MAX_HEADERS} header fields")
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused: input is read and dropped until the linger ends
        super().data_received(data)
        # A header still arriving is buffered by the parser before on_header sees it, so
        # what arrives while the head is incomplete is bounded too.
        if self._in_head and self._refusal is None:
            self._pending_head_bytes += len(data)
            if self._pending_head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, f"request head larger than {MAX_HEAD_BYTES} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        super().connection_lost(exc)

    def _count_head(self, size: int) -> None:
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > MAX_HEAD_BYTES:
            self._refuse_in_parser(431, f"request head larger than {MAX_HEAD_BYTES} bytes")

    def _end_head(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and self._refusal is None:
            self._refuse(408, f"request head not received within {HEAD_TIMEOUT_S:g} s")

    # -- refusing -----------------------------------------------------------------------

    def _refuse_in_parser(self, status: int, reason: str) -> None:
        self._refusal = (status, reason)
        raise _HeadRefused(reason)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self._write_refusal(*self._refusal)

    def _refuse(self, status: int, reason: str) -> None:
        self._refusal = (status, reason)
        self._write_refusal(status, reason)

    def _write_refusal(self, status: int, reason: str) -> None:
        self._end_head()
        if self.transport.is_closing():
            return
        body = (
            b'{"data":null,"error":{"code":"bad_request","message":"'
            + reason.encode("ascii")
            + b'"}}'
        )
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body)) + body
        )
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def service_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    lifespan: Literal["auto", "on", "off"] = "on",
    timeout_graceful_shutdown: int = GRACEFUL_SHUTDOWN_S,
    keep_logging: bool = False,
) -> uvicorn.Config:
    """The uvicorn configuration the service runs under (the tests' servers use it too).
    ``keep_logging`` leaves the host program's logging as it is (uvicorn otherwise applies
    its own config, replacing the handlers of its loggers and closing every handler)."""
    extra: dict[str, Any] = {"log_config": None} if keep_logging else {}
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=BoundedHttpToolsProtocol,
        ws="none",
        log_level="warning",
        access_log=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        **extra,
    )


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers, for a server embedded in another program
    (a test session, a benchmark) whose signals belong to that program."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start_on_loopback(
    app: Any,
    *,
    lifespan: Literal["auto", "on", "off"] = "off",
    timeout_s: float = 10.0,
    graceful_shutdown_s: int = 2,
    keep_logging: bool = False,
) -> tuple[QuietServer, asyncio.Task[None], str]:
    """Serve ``app`` with :func:`service_config` on a free 127.0.0.1 port, in a task of the
    running loop, draining at most ``graceful_shutdown_s`` when stopped (tests keep it
    short). Returns once it is accepting: the server (set ``should_exit`` and await
    the task to stop it), its task and its base URL. RuntimeError if it exits during
    start-up; TimeoutError after ``timeout_s``."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when
    # the listener's proto says TCP; with proto 0 every keep-alive request pays ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = QuietServer(
        service_config(
            app,
            lifespan=lifespan,
            timeout_graceful_shutdown=graceful_shutdown_s,
            keep_logging=keep_logging,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"loopback-server-{port}")
    async with asyncio.timeout(timeout_s):
        while not server.started:
            if task.done():
                raise RuntimeError(f"the server on port {port} exited during start-up")
            await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"
