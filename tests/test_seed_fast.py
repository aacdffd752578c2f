"""The bulk seed path: the same rows as the plain load and the original seed, a whole schema
afterwards, nothing left behind on failure, and draws identical to ``random``'s own."""

from __future__ import annotations

import random
import struct
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio

from sixty_core.db.migrate import migrate
from sixty_core.db.provision import Database, connect
from sixty_core.db.seed import SEEDED_TABLES, generate, seed, table_checksums
from sixty_core.db.seed_load import copy_in_bulk, copy_rows
from sixty_core.db.seed_rows import (
    _weighted_pick,
    draw_rows,
    id_bits,
    uniform_below,
)
from sixty_core.db.seed_tables import STAGE_WEIGHTS
from sixty_core.db.seed_values import CopyBinary, Values
from sixty_core.db.template import create_database, drop_database
from sixty_core.errors import SeedError

#: table_checksums of (scale 2, seed 11) as seeded by the original row-by-row code (commit
#: dc92810): the bulk path must keep reproducing them byte for byte.
ORIGINAL_CHECKSUMS = {
    "profiles": "9abd532e3f1451bdd1b8348c6c383018",
    "deal_stages": "c8173ecbca7c8aea1b6560aa50b28f2b",
    "companies": "2a367a2d49415f867c7460a161b69e5f",
    "contacts": "244b6c34f3514a5488538becc428b37e",
    "deals": "0bca2b1da9c831e5e482ebc08f327534",
    "activities": "9b3fa7ac05489de613daaf151f986a1e",
    "deal_stage_history": "3b35258253c3a09bbf4cf17b9f572cc5",
    "sessions": "69beb5e7bd9175921b08c93467cb9183",
}
SCALE = 12
SEED = 5

_SCHEMA_SQL = """
SELECT 'index' AS kind, indexname AS name, indexdef AS definition
  FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint', conname, conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
       || CASE WHEN convalidated THEN '' ELSE ' NOT VALIDATED' END
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger', tgname, tgrelid::regclass::text || ' enabled=' || tgenabled::text
  FROM pg_trigger WHERE NOT tgisinternal
ORDER BY 1, 2, 3
"""


async def _schema(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in await conn.fetch(_SCHEMA_SQL)]


@pytest_asyncio.fixture(loop_scope="session")
async def migrated(pg_server: Database) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh migrated, unseeded database."""
    name = "bulk_seed"
    conn = await connect(await create_database(pg_server.dsn, name))
    try:
        await migrate(conn)
        yield conn
    finally:
        await conn.close()
        await drop_database(pg_server.dsn, name)


async def test_bulk_seed_stores_what_the_plain_load_stores(
    pg_server: Database, migrated: asyncpg.Connection
) -> None:
    """Seeding through the bulk path (no keys, triggers off, binary COPY) gives the same
    tables as copying generate()'s objects row by row with every index and trigger on."""
    switch_interval = sys.getswitchinterval()
    report = await seed(migrated, scale=SCALE, seed=SEED)
    bulk = await table_checksums(migrated)
    assert sys.getswitchinterval() == switch_interval  # the drawing thread's is undone

    name = "plain_seed"
    plain_conn = await connect(await create_database(pg_server.dsn, name))
    try:
        await migrate(plain_conn)
        data = generate(SCALE, SEED)
        async with plain_conn.transaction():
            rows = await copy_rows(plain_conn, data.rows)
        plain = await table_checksums(plain_conn)
    finally:
        await plain_conn.close()
        await drop_database(pg_server.dsn, name)

    assert rows == report.rows
    assert report.rows["deals"] == 500 * SCALE
    assert bulk == plain
    assert set(bulk) == {t for t, _ in SEEDED_TABLES}


async def test_seed_reproduces_the_original_seed(migrated: asyncpg.Connection) -> None:
    """The tables match, checksum for checksum, what the original generator seeded, also
    when they replace an earlier seed (``reset``)."""
    await seed(migrated, scale=2, seed=11)
    assert await table_checksums(migrated) == ORIGINAL_CHECKSUMS
    await seed(migrated, scale=1, seed=3, reset=True)
    assert await table_checksums(migrated) != ORIGINAL_CHECKSUMS
    await seed(migrated, scale=2, seed=11, reset=True)
    assert await table_checksums(migrated) == ORIGINAL_CHECKSUMS


async def test_every_index_constraint_and_trigger_is_back(migrated: asyncpg.Connection) -> None:
    """After a bulk seed the schema is exactly what the migrations made: every index,
    key, foreign key (validated) and trigger, the triggers enabled; the keys bite."""
    before = await _schema(migrated)
    # The snapshot sees what a bulk load could leave behind: a trigger off, a key missing.
    probe = migrated.transaction()
    await probe.start()
    await migrated.execute("ALTER TABLE deals DISABLE TRIGGER deal_change_notify_trigger")
    await migrated.execute("ALTER TABLE sessions DROP CONSTRAINT sessions_user_id_fkey")
    broken = await _schema(migrated)
    await probe.rollback()
    assert len(set(before) ^ set(broken)) == 3  # the trigger twice (on, off), the key once
    assert await _schema(migrated) == before
    await seed(migrated, scale=1, seed=3)
    assert await _schema(migrated) == before
    owner = await migrated.fetchval("SELECT id FROM profiles LIMIT 1")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await migrated.execute(
            "INSERT INTO deals (name, company, stage_id, owner_id) "
            "VALUES ('x', 'y', gen_random_uuid(), $1)",
            owner,
        )
    with pytest.raises(asyncpg.UniqueViolationError):
        await migrated.execute("INSERT INTO profiles (email) SELECT email FROM profiles LIMIT 1")


async def test_a_failed_seed_leaves_data_and_schema_as_they_were(
    migrated: asyncpg.Connection,
) -> None:
    """A seed refused half-way (here by a check constraint on activities) rolls back the
    rows and the dropped keys and disabled triggers alike."""
    await migrated.execute("ALTER TABLE activities ADD CONSTRAINT refuse_all CHECK (false)")
    before = await _schema(migrated)
    with pytest.raises(SeedError, match="rolled back, nothing was written"):
        await seed(migrated, scale=2, seed=1)
    assert await _schema(migrated) == before
    for table, _ in SEEDED_TABLES:
        assert await migrated.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_a_duplicate_key_is_caught_when_the_keys_are_rebuilt(
    migrated: asyncpg.Connection,
) -> None:
    """With the keys dropped during the copy, a duplicate is refused when the key comes
    back, with the same error class as row by row, and everything rolls back."""
    before = await _schema(migrated)
    batches = list(draw_rows(0, 1, CopyBinary()))
    profiles = next(rows for table, rows in batches if table == "profiles")
    doubled = [("profiles", profiles + profiles) if t == "profiles" else (t, r) for t, r in batches]
    with pytest.raises(asyncpg.UniqueViolationError):
        async with migrated.transaction():
            await copy_in_bulk(migrated, iter(doubled))
    assert await _schema(migrated) == before
    assert await migrated.fetchval("SELECT count(*) FROM profiles") == 0


async def test_a_drawing_error_stops_the_copy_and_rolls_back(
    migrated: asyncpg.Connection,
) -> None:
    """An exception raised while drawing rows (on the drawing thread) reaches the caller
    and leaves nothing written."""

    def failing() -> object:
        yield from draw_rows(1, 1, CopyBinary())
        raise ValueError("draw failed")

    with pytest.raises(ValueError, match="draw failed"):
        async with migrated.transaction():
            await copy_in_bulk(migrated, failing())  # type: ignore[arg-type]
    assert await migrated.fetchval("SELECT count(*) FROM deals") == 0


async def test_bulk_copy_refuses_to_run_outside_a_transaction(
    migrated: asyncpg.Connection,
) -> None:
    """Dropping keys outside a transaction would leave them dropped on failure: refused."""
    with pytest.raises(RuntimeError, match="inside a transaction"):
        await copy_in_bulk(migrated, iter(()))
    assert await migrated.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'deals'")


def test_fast_draws_equal_randoms_own() -> None:
    """below(), the weighted stage pick and id_bits() draw exactly as rng.choice,
    rng.randrange, rng.choices and uuid.UUID(version=4) do, draw for draw."""
    for n in (1, 2, 3, 5, 7, 19, 20, 150, 20000, 10**7, 12_500, 500_000):
        ours, theirs = random.Random(n), random.Random(n)
        below = uniform_below(ours)
        for _ in range(500):
            assert below(n) == theirs.randrange(n)
        assert ours.random() == theirs.random()
    ours, theirs = random.Random(9), random.Random(9)
    for _ in range(2000):
        assert _weighted_pick(ours) == theirs.choices(range(5), weights=STAGE_WEIGHTS)[0]
    bits = random.Random(1)
    for _ in range(200):
        raw = bits.getrandbits(128)
        assert id_bits(raw) == uuid.UUID(int=raw, version=4).int


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _numeric(field: bytes) -> Decimal:
    ndigits, weight, sign, _ = struct.unpack(">hhhh", field[4:12])
    digits = struct.unpack(f">{ndigits}h", field[12:])
    value = sum(Decimal(d) * Decimal(10_000) ** (weight - i) for i, d in enumerate(digits))
    return -value if sign == 0x4000 else value


@pytest.mark.parametrize("ago", [0, 1, 59, 86399, 86400, 700 * 86400 + 5, -(86400 * 3500)])
def test_binary_fields_hold_the_objects_values(ago: int) -> None:
    """Each binary COPY field (length prefix, then Postgres' wire form) decodes to the
    object generate() holds for the same drawn value."""
    binary, objects = CopyBinary(), Values()
    length, micros = struct.unpack(">iq", binary.ts(ago))
    assert length == 8
    assert _PG_EPOCH + timedelta(microseconds=micros) == objects.ts(ago)
    length, days = struct.unpack(">ii", binary.date(ago // 86400))
    assert (length, _PG_EPOCH.date() + timedelta(days=days)) == (4, objects.date(ago // 86400))
    bits = id_bits(ago % 997 + 2**100)
    assert uuid.UUID(bytes=binary.uuid(bits)[4:]) == objects.uuid(bits)
    assert binary.text("Ava Fox") == struct.pack(">i", 7) + b"Ava Fox"


@pytest.mark.parametrize("units", [0, 1, 250, 9999, 10_000, 19_999, 48_000, 123_456_789])
def test_binary_amounts_hold_the_objects_values(units: int) -> None:
    """Money in base-10,000 numeric digits decodes to the same Decimal, even when asked
    twice (the second comes from the cache)."""
    binary = CopyBinary()
    assert _numeric(binary.money(units)) == Values().money(units)
    assert _numeric(binary.money(units)) == units
