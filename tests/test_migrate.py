"""Migrations: ordered, recorded, idempotent, and guarded against edited history."""

from __future__ import annotations

import asyncpg
import pytest

from sixty_core.db.migrate import MigrationError, load_migrations, migrate
from sixty_core.db.provision import connect


async def test_migrate_twice_is_a_no_op(empty_db_dsn: str) -> None:
    """The first run applies every migration; the second applies none and changes nothing."""
    conn = await connect(empty_db_dsn)
    try:
        first = await migrate(conn)
        assert first == [m.version for m in load_migrations()]
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname='public'")
        assert await migrate(conn) == []
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname='public'")
            == tables
        )
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(first)
    finally:
        await conn.close()


async def test_schema_has_the_deal_flow_tables(db_conn: asyncpg.Connection) -> None:
    """Every table the deal flows use exists."""
    names = {
        r["tablename"]
        for r in await db_conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {
        "profiles",
        "deal_stages",
        "companies",
        "contacts",
        "deals",
        "activities",
        "deal_stage_history",
        "sessions",
        "schema_migrations",
    } <= names


async def test_deal_list_indexes_exist(db_conn: asyncpg.Connection) -> None:
    """The indexes a deal list needs (owner, status, stage, created_at desc) are present."""
    defs = " ".join(
        r["indexdef"]
        for r in await db_conn.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = 'deals'")
    )
    for fragment in (
        "(owner_id, status, stage_id)",
        "(stage_id)",
        "(status)",
        "(created_at DESC, id DESC)",
        "(owner_id, created_at DESC, id DESC)",
    ):
        assert fragment in defs


async def test_edited_migration_is_refused(db_conn: asyncpg.Connection) -> None:
    """A recorded migration whose checksum no longer matches stops the run."""
    await db_conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = '0001'")
    with pytest.raises(MigrationError, match="different content"):
        await migrate(db_conn)
