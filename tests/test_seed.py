"""Seed data: deterministic, consistent, all-or-nothing, with derivable tokens."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest

from sixty_core.db import workflow
from sixty_core.db.migrate import migrate
from sixty_core.db.provision import Database, connect
from sixty_core.db.seed import generate, seed, table_checksums
from sixty_core.db.template import create_database, drop_database
from sixty_core.errors import SeedError
from sixty_core.tokens import derive_token, hash_token
from tests.conftest import TEST_SCALE, TEST_SEED


async def _seeded_checksums(pg: Database, name: str, scale: int, seed_value: int) -> dict[str, str]:
    dsn = await create_database(pg.dsn, name)
    conn = await connect(dsn)
    try:
        await migrate(conn)
        await seed(conn, scale=scale, seed=seed_value)
        return await table_checksums(conn)
    finally:
        await conn.close()
        await drop_database(pg.dsn, name)


async def test_same_scale_and_seed_give_identical_tables(pg_server: Database) -> None:
    """Two seeds with the same arguments produce byte-identical tables; another seed differs."""
    first = await _seeded_checksums(pg_server, "det_a", 2, 11)
    second = await _seeded_checksums(pg_server, "det_b", 2, 11)
    other = await _seeded_checksums(pg_server, "det_c", 2, 12)
    assert first == second
    assert first["deals"] != other["deals"]
    assert first["profiles"] != other["profiles"]


def test_generate_is_pure() -> None:
    """Generation alone (no database) is deterministic too."""
    assert generate(1, 5).rows == generate(1, 5).rows
    assert generate(1, 5).rows != generate(1, 6).rows


async def test_revenue_trigger_overrides_value(db_conn: asyncpg.Connection) -> None:
    """value = one_off + 3*mrr and annual = one_off + 12*mrr on insert and update."""
    stage = await db_conn.fetchval("SELECT id FROM deal_stages ORDER BY order_position LIMIT 1")
    owner = await db_conn.fetchval("SELECT id FROM profiles LIMIT 1")
    row = await db_conn.fetchrow(
        "INSERT INTO deals (name, company, value, stage_id, owner_id, one_off_revenue, "
        "monthly_mrr) VALUES ('t', 'c', 999999, $1, $2, 1000, 200) "
        "RETURNING id, value, annual_value",
        stage,
        owner,
    )
    assert row is not None
    assert (row["value"], row["annual_value"]) == (Decimal("1600.00"), Decimal("3400.00"))
    value = await db_conn.fetchval(
        "UPDATE deals SET monthly_mrr = 0, value = 5 WHERE id = $1 RETURNING value", row["id"]
    )
    assert value == Decimal("1000.00")
    mismatches = await db_conn.fetchval(
        "SELECT count(*) FROM deals WHERE value <> one_off_revenue + 3 * monthly_mrr"
    )
    assert mismatches == 0


async def test_foreign_keys_hold(db_conn: asyncpg.Connection) -> None:
    """Seeded rows reference existing parents, and a dangling reference is refused."""
    orphans = await db_conn.fetchval(
        """
        SELECT count(*) FROM deals d
        LEFT JOIN deal_stages s ON s.id = d.stage_id
        LEFT JOIN profiles p ON p.id = d.owner_id
        WHERE s.id IS NULL OR p.id IS NULL
        """
    )
    assert orphans == 0
    owner = await db_conn.fetchval("SELECT id FROM profiles LIMIT 1")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db_conn.execute(
            "INSERT INTO deals (name, company, stage_id, owner_id) "
            "VALUES ('x', 'y', gen_random_uuid(), $1)",
            owner,
        )


async def test_tokens_are_derivable_and_stored_hashed(db_conn: asyncpg.Connection) -> None:
    """Owner i's session is stored under hash(derive_token(seed, i)); the admin is owner 0."""
    owners = generate(1, TEST_SEED).owners
    for owner in owners:
        assert owner.token == derive_token(TEST_SEED, owner.index)
        user = await db_conn.fetchrow(
            "SELECT p.id::text AS id, p.is_admin FROM sessions s "
            "JOIN profiles p ON p.id = s.user_id WHERE s.token_hash = $1",
            hash_token(owner.token),
        )
        assert user is not None
        assert user["id"] == owner.id
        assert user["is_admin"] == (owner.index == 0)
    # Only hashes are stored: no column of any session row holds a raw token.
    assert await db_conn.fetchval("SELECT count(*) FROM sessions") == len(owners)
    leaked = await db_conn.fetchval(
        "SELECT count(*) FROM sessions s, unnest($1::text[]) AS raw(token) "
        "WHERE strpos(s::text, raw.token) > 0",
        [o.token for o in owners],
    )
    assert leaked == 0
    assert derive_token(TEST_SEED, 1) != derive_token(TEST_SEED + 1, 1)


async def test_reseeding_without_reset_is_refused(db_conn: asyncpg.Connection) -> None:
    """Seeding a database that holds data fails clearly and changes nothing."""
    before = await table_checksums(db_conn)
    with pytest.raises(SeedError, match="--reset"):
        await seed(db_conn, scale=1, seed=99)
    assert await table_checksums(db_conn) == before


async def test_a_stage_already_there_refuses_the_seed(empty_db_dsn: str) -> None:
    """One stray row in any seeded table (here a stage) is refused before anything is
    written, with the way out named."""
    conn = await connect(empty_db_dsn)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO deal_stages (name, color, order_position, default_probability) "
            "VALUES ('SQL', '#000', 1, 1)"
        )
        with pytest.raises(SeedError, match="--reset"):
            await seed(conn, scale=1, seed=1)
        assert await conn.fetchval("SELECT count(*) FROM deal_stages") == 1
    finally:
        await conn.close()


async def test_failed_seed_leaves_nothing_half_written(empty_db_dsn: str) -> None:
    """A seed that fails half-way (the last table refuses its rows) rolls every table
    back and says so, without the database's own words."""
    conn = await connect(empty_db_dsn)
    try:
        await migrate(conn)
        await conn.execute("ALTER TABLE activities ADD CONSTRAINT refuse_all CHECK (false)")
        with pytest.raises(SeedError, match="rolled back, nothing was written") as info:
            await seed(conn, scale=1, seed=1)
        assert "refuse_all" not in str(info.value)
        for table in ("profiles", "deal_stages", "companies", "deals", "activities"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("scale", [-1, 1001])
def test_scale_out_of_range_is_refused(scale: int) -> None:
    """Negative or absurd scales are refused before anything is generated."""
    with pytest.raises(SeedError, match="between 0 and"):
        generate(scale, 1)


async def test_a_database_seeded_elsewhere_yields_its_tokens_only_for_its_seed(
    db_dsn: str, db_conn: asyncpg.Connection
) -> None:
    """`sixty serve --dsn` can hand out tokens without having seeded: the derived owners
    are returned only when every one has a live session; a revoked one spoils it."""
    owners = await workflow.seeded_owners_of(db_dsn, scale=TEST_SCALE, seed_value=TEST_SEED)
    assert owners is not None
    assert [o.token for o in owners] == [o.token for o in generate(TEST_SCALE, TEST_SEED).owners]
    assert await workflow.seeded_owners_of(db_dsn, scale=TEST_SCALE, seed_value=7) is None
    await db_conn.execute(
        "UPDATE sessions SET revoked_at = now() WHERE token_hash = $1",
        hash_token(owners[1].token),
    )
    assert await workflow.seeded_owners_of(db_dsn, scale=TEST_SCALE, seed_value=TEST_SEED) is None
