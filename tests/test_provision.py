"""Provisioning contract: every backend yields a working Postgres and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from sixty_core.db.migrate import migrate
from sixty_core.db.provision import (
    Database,
    check_dsn,
    connect,
    postgres_said,
    provision,
    redact_dsn,
    start_embedded,
)
from sixty_core.db.seed import seed
from sixty_core.db.template import create_database, drop_database
from sixty_core.errors import ProvisionError
from sixty_core.settings import Settings
from tests.conftest import need_docker


def _alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (this sandbox's init does not reap) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _backends() -> Iterator[object]:
    yield "embedded"
    yield "url"
    yield pytest.param("container", marks=[pytest.mark.container])


@pytest_asyncio.fixture(params=list(_backends()), loop_scope="session")
async def backend_settings(
    request: pytest.FixtureRequest, pg_server: Database
) -> AsyncIterator[Settings]:
    backend = request.param
    if backend == "url":
        # A fresh, empty database on the session's embedded server stands in for "any DSN".
        name = f"url{os.getpid()}"
        dsn = await create_database(pg_server.dsn, name)
        yield Settings(db_backend="url", database_url=dsn)
        await drop_database(pg_server.dsn, name)
        return
    if backend == "container":
        need_docker()
    yield Settings.from_env(os.environ, db_backend=backend)


async def test_backend_contract(backend_settings: Settings) -> None:
    """A backend connects, migrates, seeds, answers a query, and is gone afterwards."""
    async with provision(backend_settings) as database:
        conn = await connect(database.dsn)
        try:
            await migrate(conn)
            report = await seed(conn, scale=0, seed=7)
            assert report.rows["deal_stages"] == 5
            assert await conn.fetchval("SELECT count(*) FROM deal_stages") == 5
        finally:
            await conn.close()
    if database.backend == "embedded":
        assert database.server_pid is not None
        assert not _alive(database.server_pid)
        assert database.data_dir is not None and not database.data_dir.exists()
    if database.backend == "container":
        import docker

        client = docker.from_env()
        ids = [c.id for c in client.containers.list(all=True)]
        assert database.container_id not in ids


async def test_url_backend_without_url_says_what_to_set() -> None:
    """The url backend with no DSN names SIXTY_DATABASE_URL and the embedded alternative."""
    with pytest.raises(ProvisionError, match="SIXTY_DATABASE_URL"):
        async with provision(Settings(db_backend="url")):
            pass


async def test_bad_dsn_message_never_echoes_the_password() -> None:
    """A DSN with a wrong port or host is refused with the password redacted."""
    secret = "hunter2-very-secret"
    for dsn in (f"postgresql://u:{secret}@127.0.0.1:1/x", f"postgresql://u:{secret}@h:zz/x"):
        with pytest.raises(ProvisionError) as info:
            await connect(dsn, timeout_s=2)
        assert secret not in str(info.value)
        assert "***" in str(info.value)


def test_non_postgres_scheme_is_refused() -> None:
    """Only postgresql:// URLs are accepted, with an example of a good one."""
    with pytest.raises(ProvisionError, match="postgresql://"):
        check_dsn("mysql://root:pw@localhost/db")


def test_redact_dsn_keeps_everything_but_the_password() -> None:
    """Redaction replaces just the password, wherever a DSN spells it."""
    assert redact_dsn("postgresql://u:pw@h:5/db?x=1") == "postgresql://u:***@h:5/db?x=1"
    assert redact_dsn("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_dsn("postgresql://u@h/db?password=pw&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert redact_dsn("host=h password=pw dbname=x") == "host=h password=*** dbname=x"
    assert redact_dsn("host=h password='p w' dbname=x") == "host=h password=*** dbname=x"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u@127.0.0.1:1/db?password=hunter2-very-secret",
        "host=127.0.0.1 port=1 password=hunter2-very-secret dbname=x",
        "postgresql://u:hunter2-very-secret@127.0.0.1:1/db",
    ],
)
async def test_no_dsn_form_echoes_its_password(dsn: str) -> None:
    """Query-string, key=value and userinfo passwords never reach an error message."""
    with pytest.raises(ProvisionError) as info:
        await connect(dsn, timeout_s=2)
    assert "hunter2-very-secret" not in str(info.value)


def test_an_embedded_postgres_that_cannot_start_says_what_postgres_said() -> None:
    """initdb refuses a data folder that already holds a file; pgserver's exception has
    only the exit status, the error must carry initdb's own words. (The folder is made in
    the system's temp, not pytest's: pgserver opens its parents to its own user.)"""
    pgdata = Path(tempfile.mkdtemp(prefix="sixty-test-pg-"))
    try:
        (pgdata / "in-the-way").write_text("")
        with pytest.raises(ProvisionError) as refused:
            start_embedded(pgdata)
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)
    message = str(refused.value)
    assert "did not start" in message and "it said:" in message
    assert "is not empty" in message
    assert message.endswith("try --db container or --db url")


def test_what_postgres_said_is_read_from_pgservers_failure_log() -> None:
    logged = (
        "Failed postgres command (1, ['initdb']) with kwargs: `{}`:\nerror:\nexit 1\n"
        "stdout:\nThe files belonging to this database system\n---\n"
        'stderr:\ninitdb: error: directory "/x" exists but is not empty\n'
        "initdb: hint: remove it\n---\n"
    )
    assert postgres_said(logged) == (
        'initdb: error: directory "/x" exists but is not empty / initdb: hint: remove it'
    )
    assert postgres_said("no stderr section") == ""
