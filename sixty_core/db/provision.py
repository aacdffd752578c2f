"""Provision a real Postgres and yield its DSN: ``embedded``, ``container`` or ``url``.

One async context manager, :func:`provision`, chooses a backend by name:

``embedded`` (default)
    a throwaway server from the ``pgserver`` wheel in a temporary directory (it runs the
    server as an unprivileged user when we are root); stopped and removed on exit.
``container``
    a ``testcontainers`` Postgres container (image from ``Settings.pg_image``); with
    ``docker_network="host"`` it listens on a free loopback port so no traffic leaves
    loopback; removed on exit.
``url``
    an existing server named by ``Settings.database_url``; nothing is started or stopped.

Every failure becomes a :class:`ProvisionError` (or a subclass) whose message says what to
do next and never contains a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from sixty_core.errors import ProvisionError
from sixty_core.settings import Settings

#: Bound on connecting to a freshly provisioned or given server, in seconds.
DEFAULT_CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Database:
    """A reachable Postgres: its DSN, the backend that made it and what to check it is gone.

    ``server_pid`` and ``data_dir`` are set for ``embedded`` (the postmaster, its
    temporary data directory), ``container_id`` for ``container``; all are ``None`` for
    ``url``.
    """

    dsn: str
    backend: str
    server_pid: int | None = None
    container_id: str | None = None
    data_dir: Path | None = None

    @property
    def redacted_dsn(self) -> str:
        return redact_dsn(self.dsn)


#: ``password=...`` in a query string or a libpq key=value DSN (quoted or not).
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with every password replaced by ``***`` (for messages and logs):
    the URL's userinfo password and any ``password=`` parameter, in a URL's query string
    or in libpq's key=value form. A DSN that does not parse is not echoed at all."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable DSN>"
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        dsn = urlunsplit(parts._replace(netloc=netloc))
    return _PASSWORD_PARAM.sub(r"\1***", dsn)


def _passwords(dsn: str) -> list[str]:
    """Every password spelled in ``dsn`` (userinfo, and password= parameters)."""
    found = [m.group(2).strip("'") for m in _PASSWORD_PARAM.finditer(dsn)]
    with contextlib.suppress(ValueError):
        if (userinfo := urlsplit(dsn).password) is not None:
            found.append(userinfo)
            found.append(unquote(userinfo))
    return [p for p in found if p]


def _scrub(message: str, dsn: str) -> str:
    """Remove the DSN's passwords from an arbitrary error message."""
    for password in sorted(_passwords(dsn), key=len, reverse=True):
        message = message.replace(password, "***")
    return message


def check_dsn(dsn: str) -> None:
    """Raise :class:`ProvisionError` unless ``dsn`` looks like a usable Postgres URL."""
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - parsing the port raises ValueError when it is not a number
    except ValueError as exc:
        raise ProvisionError(
            f"bad database URL {redact_dsn(dsn)}: {_scrub(str(exc), dsn)}"
        ) from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise ProvisionError(
            f"bad database URL {redact_dsn(dsn)}: it must start with postgresql:// "
            "(e.g. postgresql://user:password@127.0.0.1:5432/dbname)"
        )


async def connect(dsn: str, *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> asyncpg.Connection:
    """Open one connection to ``dsn`` within ``timeout_s``; failures become ProvisionError."""
    check_dsn(dsn)
    try:
        return await asyncpg.connect(dsn, timeout=timeout_s, command_timeout=120)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = _scrub(str(exc) or type(exc).__name__, dsn)
        raise ProvisionError(f"cannot connect to {redact_dsn(dsn)}: {reason}") from None


@asynccontextmanager
async def provision(settings: Settings) -> AsyncIterator[Database]:
    """Yield a reachable :class:`Database` from the backend ``settings.db_backend`` names.

    The server (if this call started one) is stopped and removed when the block exits,
    whether it exits normally, by an exception or by cancellation.
    """
    if settings.db_backend == "embedded":
        cm = _embedded()
    elif settings.db_backend == "container":
        cm = _container(settings)
    else:
        cm = _url(settings)
    async with cm as database:
        yield database


@asynccontextmanager
async def _url(settings: Settings) -> AsyncIterator[Database]:
    if not settings.database_url:
        raise ProvisionError(
            "the url backend needs a database URL: set SIXTY_DATABASE_URL or pass --dsn "
            "(or use --db embedded, the default, for a throwaway server)"
        )
    conn = await connect(settings.database_url)
    await conn.close()
    yield Database(dsn=settings.database_url, backend="url")


class _PgserverErrors(logging.Handler):
    """Keeps the last thing pgserver logs at ERROR: a failed initdb or pg_ctl is logged
    there with its own stderr, while the exception it raises carries only the exit status."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


def postgres_said(logged: str, *, lines: int = 3) -> str:
    """The last ``lines`` lines of the command's stderr in pgserver's failure log (it ends
    ``stderr:\n...\n---``), or "" when there is none."""
    _, found, rest = logged.rpartition("stderr:\n")
    if not found:
        return ""
    said = [line.strip() for line in rest.split("\n---")[0].splitlines() if line.strip()]
    return " / ".join(said[-lines:])


def start_embedded(pgdata: Path) -> Any:
    """Start pgserver's Postgres in ``pgdata``; ProvisionError with what initdb or pg_ctl
    printed when it cannot (pgserver's own exception has only the exit status)."""
    errors = _PgserverErrors()
    logging.getLogger("pgserver").addHandler(errors)
    try:
        return _start_pgserver(pgdata)
    except Exception as exc:
        said = postgres_said(errors.last)
        raise ProvisionError(
            f"the embedded Postgres (pgserver) did not start: {exc}"
            + (f"; it said: {said}" if said else "")
            + "; try --db container or --db url"
        ) from exc
    finally:
        logging.getLogger("pgserver").removeHandler(errors)


@asynccontextmanager
async def _embedded() -> AsyncIterator[Database]:
    pgdata = Path(tempfile.mkdtemp(prefix="sixty-pg-"))
    try:
        server = await asyncio.to_thread(start_embedded, pgdata)
    except ProvisionError:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise
    try:
        yield Database(
            dsn=server.get_uri(),
            backend="embedded",
            server_pid=server.get_pid(),
            data_dir=pgdata,
        )
    finally:
        # Shielded so a cancelled caller still stops the server instead of orphaning it.
        await asyncio.shield(asyncio.to_thread(_stop_pgserver, server, pgdata))


def _start_pgserver(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells); harmless here.
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]


def _stop_pgserver(server: Any, pgdata: Path) -> None:
    try:
        server.cleanup()
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)


@asynccontextmanager
async def _container(settings: Settings) -> AsyncIterator[Database]:
    from sixty_core.db._container import start_container

    handle = await asyncio.to_thread(
        start_container, image=settings.pg_image, network=settings.docker_network
    )
    try:
        yield Database(dsn=handle.dsn, backend="container", container_id=handle.container_id)
    finally:
        await asyncio.shield(asyncio.to_thread(handle.stop))
