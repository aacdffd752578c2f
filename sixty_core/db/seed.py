"""Deterministic seed data: same (scale, seed) -> byte-identical rows, loaded with COPY.

Everything, ids and timestamps included, comes from one ``random.Random(seed)`` and a fixed
epoch, never from ``now()``, so two seeds with the same arguments produce identical tables
(:func:`table_checksums` proves it). Per scale unit: 5 owners (owner 0 is the admin), 25
companies, 50 contacts, 500 deals across the live pipeline stages, 1000 activities and one
or two stage-history rows per deal. Every owner gets one session whose bearer token is
:func:`sixty_core.tokens.derive_token` of (seed, owner index).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from sixty_core.db.seed_load import copy_in_bulk
from sixty_core.db.seed_rows import draw_profiles, draw_rows
from sixty_core.db.seed_tables import (
    ACTIVITIES_PER_SCALE,
    COLUMNS,
    COMPANIES_PER_SCALE,
    CONTACTS_PER_SCALE,
    DEALS_PER_SCALE,
    OWNERS_PER_SCALE,
    PIPELINE_STAGES,
    SEEDED_TABLES,
    SESSION_EXPIRY,
    STAGE_WEIGHTS,
)
from sixty_core.db.seed_values import EPOCH, CopyBinary, Values
from sixty_core.errors import SeedError
from sixty_core.tokens import derive_token

__all__ = [
    "ACTIVITIES_PER_SCALE",
    "COMPANIES_PER_SCALE",
    "CONTACTS_PER_SCALE",
    "DEALS_PER_SCALE",
    "EPOCH",
    "MAX_SCALE",
    "OWNERS_PER_SCALE",
    "PIPELINE_STAGES",
    "SEEDED_TABLES",
    "SESSION_EXPIRY",
    "STAGE_WEIGHTS",
    "SeedData",
    "SeedOwner",
    "SeedReport",
    "check_scale",
    "generate",
    "owners_as_json",
    "seed",
    "seeded_owners",
    "table_checksums",
]

MAX_SCALE = 1000


@dataclass(frozen=True)
class SeedOwner:
    """A seeded owner and the bearer token a client uses to act as them."""

    index: int
    id: str
    email: str
    full_name: str
    is_admin: bool
    token: str


@dataclass
class SeedData:
    """Every generated row, per table, as tuples in the column order of ``columns``."""

    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    owners: list[SeedOwner] = field(default_factory=list)

    def add(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        self.columns[table] = columns
        self.rows[table] = rows

    @property
    def row_count(self) -> int:
        return sum(len(r) for r in self.rows.values())


@dataclass(frozen=True)
class SeedReport:
    """What a seed wrote and how fast: rows per table, total rows, seconds, rows per second."""

    scale: int
    seed: int
    rows: dict[str, int]
    seconds: float
    owners: list[SeedOwner]

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_s(self) -> float:
        return self.total_rows / self.seconds if self.seconds > 0 else 0.0


def check_scale(scale: int) -> None:
    """Raise :class:`SeedError` unless ``0 <= scale <= MAX_SCALE``."""
    if not isinstance(scale, int) or isinstance(scale, bool):
        raise SeedError(f"seed scale must be a whole number, got {scale!r}")
    if scale < 0 or scale > MAX_SCALE:
        raise SeedError(f"seed scale must be between 0 and {MAX_SCALE}, got {scale}")


def seeded_owners(scale: int, seed: int) -> list[SeedOwner]:
    """The owners :func:`generate` makes for (``scale``, ``seed``), without the other rows."""
    check_scale(scale)
    # The profiles are the first draws, so a fresh generator makes exactly the same ones.
    rows = draw_profiles(random.Random(seed), scale, Values())
    return [
        SeedOwner(i, str(r[0]), r[3], f"{r[1]} {r[2]}", i == 0, derive_token(seed, i))
        for i, r in enumerate(rows)
    ]


def generate(scale: int, seed: int) -> SeedData:
    """Generate every seeded row for (``scale``, ``seed``) in memory as Python objects; no I/O.

    Scale 0 still gives the pipeline stages and one admin owner with a session. A deal row
    already holds the ``value`` and ``annual_value`` the revenue trigger would compute.
    """
    check_scale(scale)
    data = SeedData()
    for table, _ in SEEDED_TABLES:
        data.add(table, COLUMNS[table], [])
    for table, rows in draw_rows(scale, seed, Values()):
        data.rows[table].extend(rows)
    data.owners = seeded_owners(scale, seed)
    return data


async def seed(
    conn: asyncpg.Connection,
    *,
    scale: int,
    seed: int,
    reset: bool = False,
    clock: Any = time.perf_counter,
) -> SeedReport:
    """Load the seed for (``scale``, ``seed``) into the migrated database behind ``conn``.

    All-or-nothing: one transaction, so a failure leaves the tables as they were. Refuses a
    database that already holds deals or owners unless ``reset`` (which truncates the seeded
    tables first, inside the same transaction). Raises :class:`SeedError`.
    """
    check_scale(scale)
    started = clock()
    try:
        async with conn.transaction():
            # Any row in any seeded table collides with the seed's fixed ids and names.
            # Table names come from the SEEDED_TABLES constant, never from input.
            counts = " + ".join(
                f"(SELECT count(*) FROM {t})"  # noqa: S608
                for t, _ in SEEDED_TABLES
            )
            existing = await conn.fetchval(f"SELECT {counts}")
            if existing and not reset:
                raise SeedError(
                    "the database already holds seeded data; pass --reset to replace it "
                    "or seed an empty database"
                )
            if existing:
                await conn.execute(
                    "TRUNCATE " + ", ".join(t for t, _ in SEEDED_TABLES) + " CASCADE"
                )
            # The rows are drawn while they are loaded, so drawing overlaps the server's work.
            rows = await copy_in_bulk(conn, draw_rows(scale, seed, CopyBinary()))
    except asyncpg.UndefinedTableError:
        raise SeedError("the database has no schema yet: run `sixty db migrate` first") from None
    except asyncpg.PostgresError as exc:
        # The transaction rolled back, so nothing was written; name the failure's kind.
        raise SeedError(
            f"seeding failed and was rolled back, nothing was written: "
            f"{type(exc).__name__} (SQLSTATE {exc.sqlstate})"
        ) from None
    seconds = clock() - started
    return SeedReport(
        scale=scale, seed=seed, rows=rows, seconds=seconds, owners=seeded_owners(scale, seed)
    )


async def table_checksums(conn: asyncpg.Connection) -> dict[str, str]:
    """Return an MD5 of every seeded table's full content, rows in a fixed order."""
    sums: dict[str, str] = {}
    for table, order in SEEDED_TABLES:
        # Table and column names come from the SEEDED_TABLES constant, never from input.
        sums[table] = await conn.fetchval(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.{order}), '')) "  # noqa: S608
            f"FROM {table} t"
        )
    return sums


def owners_as_json(owners: Sequence[SeedOwner]) -> list[dict[str, Any]]:
    """The token file's content: one object per owner (index, id, email, admin, token)."""
    return [
        {
            "index": o.index,
            "id": o.id,
            "email": o.email,
            "full_name": o.full_name,
            "is_admin": o.is_admin,
            "token": o.token,
        }
        for o in owners
    ]
