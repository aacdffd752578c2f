"""Cheap resets for measured runs: clone a seeded template database per run.

``CREATE DATABASE ... TEMPLATE`` copies files, not rows, so a fresh copy of a seeded
database takes a fraction of a second at any scale. Database names are checked against an
allow-list pattern before they are put into SQL (identifiers cannot be bound parameters).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sixty_core.db.provision import connect
from sixty_core.errors import ProvisionError

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_database_name(name: str) -> str:
    """Return ``name`` if it is a safe lowercase identifier, else raise ProvisionError."""
    if not _NAME.fullmatch(name):
        raise ProvisionError(
            f"bad database name {name!r}: use lowercase letters, digits and _ (max 63)"
        )
    return name


def dsn_for_database(dsn: str, name: str) -> str:
    """Return ``dsn`` pointing at database ``name`` (query options such as host= are kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + check_database_name(name)))


async def create_database(admin_dsn: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` (optionally as a copy of ``template``); return its DSN.

    The template must have no other sessions connected (Postgres refuses otherwise).
    """
    check_database_name(name)
    clause = f" TEMPLATE {check_database_name(template)}" if template else ""
    conn = await connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}{clause}")
    except asyncpg.PostgresError as exc:
        raise ProvisionError(f"could not create database {name!r}: {exc}") from None
    finally:
        await conn.close()
    return dsn_for_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting its sessions first."""
    check_database_name(name)
    conn = await connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@asynccontextmanager
async def clone(admin_dsn: str, template: str, name: str) -> AsyncIterator[str]:
    """A fresh copy ``name`` of ``template`` for the block; yields its DSN, drops it after
    (its sessions disconnected first), however the block ends."""
    dsn = await create_database(admin_dsn, name, template=template)
    try:
        yield dsn
    finally:
        await asyncio.shield(drop_database(admin_dsn, name))
