"""Load seed rows into Postgres: the plain way (the reference) and the bulk way (the seed's).

:func:`copy_rows` copies Python-object rows table by table with asyncpg's binary COPY while
every index, constraint and trigger stays in place: slow (each row updates a dozen btrees,
runs two deal triggers and one foreign-key probe per reference) but obviously right.

:func:`copy_in_bulk` loads the same rows as Postgres would store them, several times
faster, and must be run inside the caller's transaction (a failure anywhere then undoes the
DDL below together with the rows):

1. it drops the seeded tables' primary-key, unique and foreign-key constraints and their
   plain indexes, taking every name and definition from the catalog; check constraints
   stay, so a bad value is still refused as each row arrives;
2. it disables the two deal triggers named in :data:`DEFERRED_TRIGGERS` (never any other):
   the revenue trigger because every deal row already carries the ``value`` and
   ``annual_value`` it would compute, the change-feed trigger because a seed is a bulk
   load, not half a million deal edits for listeners (they get no per-row notifications);
3. it streams the rows in COPY's binary format, drawn and encoded on a thread that runs
   ahead of the copy (Python draws on one core while the server stores on the other);
4. it re-creates the keys, indexes and foreign keys from their catalog definitions as soon
   as the tables they name are loaded (while the thread draws the next table), with a
   larger ``maintenance_work_mem``: each index is built by one sort, each foreign key
   checked by one join; then it re-enables the triggers.

A duplicate key or dangling reference therefore fails at step 4 instead of at the row, with
the same error class, and the transaction rolls back either way.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import asyncpg

from sixty_core.db.seed_rows import Row
from sixty_core.db.seed_tables import COLUMNS, SEEDED_TABLES
from sixty_core.db.seed_values import COPY_HEADER, COPY_TRAILER, encode_rows

#: Deal triggers switched off during a bulk load, each because the rows make it redundant.
DEFERRED_TRIGGERS: tuple[tuple[str, str], ...] = (
    ("deals", "update_deal_revenue_trigger"),
    ("deals", "deal_change_notify_trigger"),
)
#: Memory for each index sort while the constraints are rebuilt (the default is 64MB; the
#: largest seed index, a million uuids, sorts in memory within this).
INDEX_BUILD_MEMORY = "256MB"

#: How many batches the drawing thread may run ahead of the copy (at most ~350 MB).
AHEAD_BATCHES = 1024
_CHUNK_BYTES = 1 << 20
#: The GIL switch interval while the drawing thread runs (Python's default is 5 ms).
SWITCH_INTERVAL_S = 0.0005

# Foreign keys first (they depend on the unique indexes), then primary keys and uniques.
# Names are quoted by format() and regclass, never spliced in from input.
_CONSTRAINTS_SQL = """
WITH seeded AS (SELECT to_regclass(name) AS rel FROM unnest($1::text[]) AS t(name))
SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname) AS drop,
       format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
              pg_get_constraintdef(c.oid)) AS restore,
       c.contype = 'f' AS is_foreign, c.conrelid AS rel, c.confrelid AS ref
  FROM pg_constraint c
 WHERE (c.contype IN ('p', 'u') AND c.conrelid IN (SELECT rel FROM seeded))
    OR (c.contype = 'f' AND (c.conrelid IN (SELECT rel FROM seeded)
                             OR c.confrelid IN (SELECT rel FROM seeded)))
 ORDER BY c.contype = 'f' DESC, c.oid
"""
# Indexes that back no constraint; those that do come back with their constraint.
_INDEXES_SQL = """
WITH seeded AS (SELECT to_regclass(name) AS rel FROM unnest($1::text[]) AS t(name))
SELECT format('DROP INDEX %s', i.indexrelid::regclass) AS drop,
       pg_get_indexdef(i.indexrelid) AS restore, i.indrelid AS rel, 0::oid AS ref
  FROM pg_index i
 WHERE i.indrelid IN (SELECT rel FROM seeded)
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                    WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)
 ORDER BY i.indexrelid
"""
_OIDS_SQL = "SELECT name, to_regclass(name)::oid FROM unnest($1::text[]) AS t(name)"
# Only triggers that are there and enabled are switched off, so only they are switched on.
_TRIGGERS_SQL = """
SELECT format('ALTER TABLE %s DISABLE TRIGGER %I', t.tgrelid::regclass, t.tgname) AS drop,
       format('ALTER TABLE %s ENABLE TRIGGER %I', t.tgrelid::regclass, t.tgname) AS restore
  FROM unnest($1::text[], $2::text[]) AS d(rel, name)
  JOIN pg_trigger t ON t.tgrelid = to_regclass(d.rel) AND t.tgname = d.name
 WHERE t.tgenabled <> 'D'
"""


async def copy_rows(conn: asyncpg.Connection, rows: dict[str, list[Row]]) -> dict[str, int]:
    """Copy ``rows`` (table -> Python-object rows, in :data:`COLUMNS` order) table by table,
    with every index, constraint and trigger in place; return rows per table.

    The reference loader the bulk path is checked against. Raises what asyncpg raises.
    """
    for table, _ in SEEDED_TABLES:
        if rows.get(table):
            await conn.copy_records_to_table(
                table, records=rows[table], columns=list(COLUMNS[table])
            )
    return {table: len(rows.get(table, ())) for table, _ in SEEDED_TABLES}


async def copy_in_bulk(
    conn: asyncpg.Connection, batches: Iterator[tuple[str, list[Row]]]
) -> dict[str, int]:
    """Load ``batches`` (``(table, rows)`` of :class:`~sixty_core.db.seed_values.CopyBinary`
    rows, each table's batches together) with the schema deferred as the module docstring
    says; return rows per table.

    Must run inside a transaction: between its first and last statement the tables have
    no keys and two triggers are off, which nobody may see or keep. Raises what asyncpg
    raises; the caller's transaction then undoes everything.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("copy_in_bulk must run inside a transaction")
    tables = [table for table, _ in SEEDED_TABLES]
    constraints = await conn.fetch(_CONSTRAINTS_SQL, tables)
    indexes = await conn.fetch(_INDEXES_SQL, tables)
    triggers = await conn.fetch(
        _TRIGGERS_SQL, [t for t, _ in DEFERRED_TRIGGERS], [n for _, n in DEFERRED_TRIGGERS]
    )
    for row in (*constraints, *indexes, *triggers):
        await conn.execute(row["drop"])

    # Restore order: keys, then plain indexes, then foreign keys (they need the keys they
    # reference). Each runs as soon as its tables are loaded, so the server builds indexes
    # and checks references while the thread still draws later tables.
    pending = [
        *(c for c in constraints if not c["is_foreign"]),
        *indexes,
        *(c for c in constraints if c["is_foreign"]),
    ]
    oids = dict(await conn.fetch(_OIDS_SQL, tables))
    unloaded = set(oids.values())
    await conn.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
    async with _Drawing(batches) as feed:
        while (table := await feed.next_table()) is not None:
            await conn.copy_to_table(
                # Looked up, not passed on: the thread can only name a seeded table.
                _seeded_table(table),
                source=feed.chunks(table),
                columns=list(COLUMNS[table]),
                format="binary",
            )
            unloaded.discard(oids[table])
            ready = [r for r in pending if r["rel"] not in unloaded and r["ref"] not in unloaded]
            for row in ready:
                await conn.execute(row["restore"])
                pending.remove(row)
    # Whatever is left: tables that got no rows, and the triggers.
    for row in (*pending, *triggers):
        await conn.execute(row["restore"])
    return {table: feed.counts.get(table, 0) for table in tables}


def _seeded_table(name: str) -> str:
    """The seeded table called ``name`` (the constant, not ``name``); KeyError otherwise.
    The COPY's table name comes from here, so only an allow-listed name reaches SQL."""
    for table, _ in SEEDED_TABLES:
        if table == name:
            return table
    raise KeyError(f"not a seeded table: {name!r}")


class _Drawing:
    """Batches drawn and spelled as COPY bytes on a thread, handed out one table at a time.

    The thread runs at most :data:`AHEAD_BATCHES` batches ahead of the copy, stops when the
    block exits (also on error or cancellation) and is joined there; an exception in the
    drawing is re-raised by :meth:`chunks` or :meth:`next_table`.
    """

    def __init__(self, batches: Iterator[tuple[str, list[Row]]]) -> None:
        self._batches = batches
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, bytes, int] | BaseException | None] = asyncio.Queue()
        self._room = threading.Semaphore(AHEAD_BATCHES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._draw, name="seed-draw", daemon=True)
        self._head: tuple[str, bytes, int] | None = None
        self._done = False
        self.counts: dict[str, int] = {}

    async def __aenter__(self) -> _Drawing:
        # The event loop needs the GIL each time the socket drains (the kernel holds about
        # 200 KB of a unix socket), and the drawing thread gives it up only every switch
        # interval: at the default 5 ms the copy crawled at ~20 MB/s. Switch more often
        # while the thread runs (scale 1000: 30 s -> 25 s); the old interval is put back.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            await asyncio.to_thread(self._thread.join)
        finally:
            sys.setswitchinterval(self._switch_interval)

    def _draw(self) -> None:
        try:
            for table, rows in self._batches:
                while not self._room.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                data = encode_rows(rows, len(COLUMNS[table]))
                self._loop.call_soon_threadsafe(self._queue.put_nowait, (table, data, len(rows)))
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        except BaseException as exc:  # handed to the copy, which re-raises it
            self._loop.call_soon_threadsafe(self._queue.put_nowait, exc)

    async def _peek(self) -> tuple[str, bytes, int] | None:
        if self._head is None and not self._done:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                self._done = True
            else:
                self._room.release()
                self._head = item
        return self._head

    async def next_table(self) -> str | None:
        """The table of the next batch, or ``None`` when every batch has been copied."""
        head = await self._peek()
        return None if head is None else head[0]

    async def chunks(self, table: str) -> AsyncIterator[bytes]:
        """``table``'s batches as one binary COPY stream (header, rows, trailer), joined up
        to about a megabyte per chunk (fewer, larger socket writes), up to the next table's
        first batch."""
        parts: list[bytes] = [COPY_HEADER]
        size = len(COPY_HEADER)
        while (head := await self._peek()) is not None and head[0] == table:
            self._head = None
            self.counts[table] = self.counts.get(table, 0) + head[2]
            parts.append(head[1])
            size += len(head[1])
            if size >= _CHUNK_BYTES or self._queue.empty():
                yield b"".join(parts)
                parts, size = [], 0
        parts.append(COPY_TRAILER)
        yield b"".join(parts)
