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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from sixty_core.errors import SeedError
from sixty_core.tokens import derive_token, hash_token

#: The live pipeline of Aug 2025: (name, order_position, default_probability, color, final).
PIPELINE_STAGES: tuple[tuple[str, int, int, str, bool], ...] = (
    ("SQL", 20, 20, "#6366F1", False),
    ("Opportunity", 30, 25, "#8B5CF6", False),
    ("Verbal", 40, 75, "#F97316", False),
    ("Signed", 50, 100, "#10B981", True),
    ("Lost", 60, 0, "#EF4444", True),
)
#: Share of deals per stage, in PIPELINE_STAGES order.
STAGE_WEIGHTS = (30, 30, 15, 15, 10)

OWNERS_PER_SCALE = 5
COMPANIES_PER_SCALE = 25
CONTACTS_PER_SCALE = 50
DEALS_PER_SCALE = 500
ACTIVITIES_PER_SCALE = 1000
MAX_SCALE = 1000

#: Seeded timestamps are relative to this instant, never to the wall clock.
EPOCH = datetime(2025, 8, 1, tzinfo=UTC)
#: Seeded sessions stay valid until then, so long-lived load runs keep authenticating.
SESSION_EXPIRY = datetime(2035, 1, 1, tzinfo=UTC)

#: Tables in load order (parents first), with the column that orders their checksum.
SEEDED_TABLES: tuple[tuple[str, str], ...] = (
    ("profiles", "id"),
    ("deal_stages", "id"),
    ("companies", "id"),
    ("contacts", "id"),
    ("deals", "id"),
    ("activities", "id"),
    ("deal_stage_history", "id"),
    ("sessions", "token_hash"),
)

_FIRST = (
    "Ava",
    "Ben",
    "Chloe",
    "Dan",
    "Ella",
    "Finn",
    "Grace",
    "Hugo",
    "Isla",
    "Jack",
    "Kara",
    "Liam",
    "Maya",
    "Noah",
    "Olive",
    "Pete",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
)
_LAST = (
    "Adams",
    "Brown",
    "Clark",
    "Davis",
    "Evans",
    "Fox",
    "Green",
    "Hill",
    "Irwin",
    "Jones",
    "King",
    "Lee",
    "Moore",
    "Nash",
    "Owen",
    "Price",
    "Reed",
    "Shaw",
    "Todd",
)
_ADJ = ("Blue", "Bright", "Clear", "Swift", "North", "Prime", "Solid", "True", "Vivid", "Apex")
_NOUN = ("Labs", "Systems", "Works", "Logic", "Cloud", "Media", "Health", "Energy", "Foods")
_INDUSTRY = ("software", "retail", "finance", "health", "energy", "media", "logistics")
_SIZES = ("startup", "small", "medium", "large", "enterprise")
_ACTIVITY_TYPES = ("sale", "outbound", "meeting", "proposal")


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


def _new_id(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _at(days_ago: float) -> datetime:
    return EPOCH - timedelta(seconds=round(days_ago * 86400))


def _owners(
    rng: random.Random, scale: int, seed: int
) -> tuple[list[tuple[Any, ...]], list[SeedOwner]]:
    """The owners' profile rows and their :class:`SeedOwner` view; index 0 is the admin.

    They are the first draws from ``rng``, so :func:`seeded_owners` can make them alone.
    """
    rows: list[tuple[Any, ...]] = []
    owners: list[SeedOwner] = []
    for i in range(max(1, OWNERS_PER_SCALE * scale)):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        oid, created = _new_id(rng), _at(400 + rng.random() * 300)
        email = f"{first.lower()}.{last.lower()}.{i}@example.com"
        role = "Director" if i == 0 else "Sales Rep"
        rows.append((oid, first, last, email, role, None, i == 0, created, created))
        owners.append(
            SeedOwner(i, str(oid), email, f"{first} {last}", i == 0, derive_token(seed, i))
        )
    return rows, owners


def seeded_owners(scale: int, seed: int) -> list[SeedOwner]:
    """The owners :func:`generate` makes for (``scale``, ``seed``), without the other rows."""
    check_scale(scale)
    return _owners(random.Random(seed), scale, seed)[1]


def generate(scale: int, seed: int) -> SeedData:
    """Generate every seeded row for (``scale``, ``seed``) in memory; no I/O.

    Scale 0 still gives the pipeline stages and one admin owner with a session.
    """
    check_scale(scale)
    rng = random.Random(seed)
    data = SeedData()

    def new_id() -> uuid.UUID:
        return _new_id(rng)

    def at(days_ago: float) -> datetime:
        return _at(days_ago)

    owners, data.owners = _owners(rng, scale, seed)
    data.add(
        "profiles",
        (
            "id",
            "first_name",
            "last_name",
            "email",
            "stage",
            "avatar_url",
            "is_admin",
            "created_at",
            "updated_at",
        ),
        owners,
    )
    owner_ids = [o[0] for o in owners]
    owner_names = [f"{o[1]} {o[2]}" for o in owners]

    stages = [
        (new_id(), name, f"{name} stage", color, pos, prob, final, EPOCH - timedelta(days=900))
        for name, pos, prob, color, final in PIPELINE_STAGES
    ]
    data.add(
        "deal_stages",
        (
            "id",
            "name",
            "description",
            "color",
            "order_position",
            "default_probability",
            "is_final",
            "created_at",
            "updated_at",
        ),
        [(*s, s[-1]) for s in stages],
    )

    companies: list[tuple[Any, ...]] = []
    for i in range(COMPANIES_PER_SCALE * scale):
        name = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} {i}"
        slug = name.lower().replace(" ", "-")
        created = at(300 + rng.random() * 300)
        companies.append(
            (
                new_id(),
                name,
                f"{slug}.example.com",
                rng.choice(_INDUSTRY),
                rng.choice(_SIZES),
                f"https://{slug}.example.com",
                rng.choice(owner_ids),
                created,
                created,
            )
        )
    data.add(
        "companies",
        (
            "id",
            "name",
            "domain",
            "industry",
            "size",
            "website",
            "owner_id",
            "created_at",
            "updated_at",
        ),
        companies,
    )

    contacts: list[tuple[Any, ...]] = []
    for i in range(CONTACTS_PER_SCALE * scale):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        company = companies[i % len(companies)]
        created = at(200 + rng.random() * 300)
        contacts.append(
            (
                new_id(),
                f"{first.lower()}.{last.lower()}.c{i}@example.org",
                first,
                last,
                rng.choice(("CEO", "CTO", "Buyer", "VP Sales")),
                f"+44 20 {rng.randrange(10**7):07d}",
                i < len(companies),
                company[0],
                company[6],
                created,
                created,
            )
        )
    data.add(
        "contacts",
        (
            "id",
            "email",
            "first_name",
            "last_name",
            "title",
            "phone",
            "is_primary",
            "company_id",
            "owner_id",
            "created_at",
            "updated_at",
        ),
        contacts,
    )

    deals: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    for i in range(DEALS_PER_SCALE * scale):
        stage_index = rng.choices(range(len(stages)), weights=STAGE_WEIGHTS)[0]
        stage = stages[stage_index]
        company = companies[rng.randrange(len(companies))]
        contact = contacts[rng.randrange(len(contacts))]
        owner_index = rng.randrange(len(owner_ids))
        created_days = 1 + rng.random() * 180
        stage_days = rng.random() * created_days
        one_off = Decimal(rng.choice((0, 0, 1500, 5000, 12000, 25000, 48000)))
        mrr = Decimal(rng.choice((0, 250, 500, 1200, 2500, 4000)))
        status = "won" if stage[1] == "Signed" else "lost" if stage[1] == "Lost" else "active"
        close = (EPOCH + timedelta(days=rng.randrange(-30, 120))).date()
        deal_id = new_id()
        deals.append(
            (
                deal_id,
                f"{company[1]} deal {i}",
                company[1],
                f"{contact[2]} {contact[3]}",
                contact[1],
                contact[5],
                Decimal(0),
                f"Seeded deal {i}",
                stage[0],
                owner_ids[owner_index],
                close if rng.random() < 0.8 else None,
                stage[5],
                status,
                one_off,
                mrr,
                company[0],
                contact[0],
                at(created_days),
                at(stage_days),
                at(stage_days),
            )
        )
        if stage_index > 0 and rng.random() < 0.5:
            previous = stages[stage_index - 1]
            entered = at(created_days)
            exited = at(stage_days)
            history.append(
                (
                    new_id(),
                    deal_id,
                    previous[0],
                    owner_ids[owner_index],
                    entered,
                    exited,
                    int((exited - entered).total_seconds()),
                )
            )
        history.append(
            (new_id(), deal_id, stage[0], owner_ids[owner_index], at(stage_days), None, None)
        )
    data.add(
        "deals",
        (
            "id",
            "name",
            "company",
            "contact_name",
            "contact_email",
            "contact_phone",
            "value",
            "description",
            "stage_id",
            "owner_id",
            "expected_close_date",
            "probability",
            "status",
            "one_off_revenue",
            "monthly_mrr",
            "company_id",
            "primary_contact_id",
            "created_at",
            "updated_at",
            "stage_changed_at",
        ),
        deals,
    )

    activities: list[tuple[Any, ...]] = []
    for _ in range(ACTIVITIES_PER_SCALE * scale):
        owner_index = rng.randrange(len(owner_ids))
        deal = deals[rng.randrange(len(deals))] if deals and rng.random() < 0.6 else None
        when = at(rng.random() * 180)
        activities.append(
            (
                new_id(),
                owner_ids[owner_index],
                rng.choice(_ACTIVITY_TYPES),
                "completed",
                rng.choice(("low", "medium", "high")),
                deal[2] if deal else rng.choice(companies)[1],
                owner_names[owner_index],
                None,
                Decimal(rng.randrange(0, 20000)),
                when,
                deal[0] if deal else None,
                when,
                when,
            )
        )
    data.add(
        "activities",
        (
            "id",
            "user_id",
            "type",
            "status",
            "priority",
            "client_name",
            "sales_rep",
            "details",
            "amount",
            "date",
            "deal_id",
            "created_at",
            "updated_at",
        ),
        activities,
    )
    data.add(
        "deal_stage_history",
        ("id", "deal_id", "stage_id", "user_id", "entered_at", "exited_at", "duration_seconds"),
        history,
    )
    data.add(
        "sessions",
        ("token_hash", "user_id", "created_at", "expires_at"),
        [(hash_token(o.token), owner_ids[o.index], EPOCH, SESSION_EXPIRY) for o in data.owners],
    )
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
    data = generate(scale, seed)
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
            for table, _ in SEEDED_TABLES:
                if data.rows[table]:
                    await conn.copy_records_to_table(
                        table, records=data.rows[table], columns=list(data.columns[table])
                    )
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
        scale=scale,
        seed=seed,
        rows={t: len(data.rows[t]) for t, _ in SEEDED_TABLES},
        seconds=seconds,
        owners=data.owners,
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
