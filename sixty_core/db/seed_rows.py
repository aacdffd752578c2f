"""The seed's rows, drawn once from one ``random.Random(seed)`` and spelled two ways.

:func:`draw_rows` is the only place that draws from the generator, so every spelling of the
seed sees the same sequence of draws and therefore the same values. How each value is
spelled is up to a :class:`Values`: :class:`Values` itself gives Python objects (``UUID``,
``datetime``, ``Decimal``) for :func:`sixty_core.db.seed.generate` and asyncpg's binary COPY;
:class:`CopyText` gives the strings of Postgres' text COPY format, which the fast loader
streams without asyncpg encoding a single value. Both spell the same stored value: the
tests load both into Postgres and compare :func:`sixty_core.db.seed.table_checksums`.

Rows come in batches of at most :data:`BATCH_ROWS`, table by table in
:data:`SEEDED_TABLES`' order, so a loader can send one batch while the next is drawn.

Draw order is a contract: reordering, adding or removing a single draw changes every later
value and every checksum. The draws below keep the order of the original per-row code,
including ``rng.choices``' one ``random()`` per weighted pick (see :func:`_weighted_pick`).
"""

from __future__ import annotations

import random
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate
from typing import Any

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

#: Seeded timestamps are relative to this instant, never to the wall clock.
EPOCH = datetime(2025, 8, 1, tzinfo=UTC)
#: Seeded sessions stay valid until then, so long-lived load runs keep authenticating.
SESSION_EXPIRY = datetime(2035, 1, 1, tzinfo=UTC)
#: Stages were created this many seconds before EPOCH (900 days).
_STAGES_AGO = 900 * 86400

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

#: The columns of every seeded table, in the order of the values in its rows. A deal row
#: carries ``value`` and ``annual_value`` as the revenue trigger computes them, so the row
#: means the same with the trigger on or off.
COLUMNS: dict[str, tuple[str, ...]] = {
    "profiles": (
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
    "deal_stages": (
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
    "companies": (
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
    "contacts": (
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
    "deals": (
        "id",
        "name",
        "company",
        "contact_name",
        "contact_email",
        "contact_phone",
        "value",
        "annual_value",
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
    "activities": (
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
    "deal_stage_history": (
        "id",
        "deal_id",
        "stage_id",
        "user_id",
        "entered_at",
        "exited_at",
        "duration_seconds",
    ),
    "sessions": ("token_hash", "user_id", "created_at", "expires_at"),
}

#: Rows per batch: small enough that a streaming loader hands Postgres work often.
BATCH_ROWS = 1000

# Every text value below is plain ASCII without tab, newline or backslash, so it needs no
# escaping in COPY's text format (CopyText relies on it).
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
_TITLES = ("CEO", "CTO", "Buyer", "VP Sales")
_ACTIVITY_TYPES = ("sale", "outbound", "meeting", "proposal")
_PRIORITIES = ("low", "medium", "high")
_ONE_OFF = (0, 0, 1500, 5000, 12000, 25000, 48000)
_MRR = (0, 250, 500, 1200, 2500, 4000)

# uuid.UUID(int=bits, version=4) clears the variant and version bits, then sets 0b10 and 4.
_ID_KEEP = ~((0xC000 << 48) | (0xF000 << 64))
_ID_SET = (0x8000 << 48) | (4 << 76)
_STAGE_CUMULATIVE = list(accumulate(STAGE_WEIGHTS))
_STAGE_TOTAL = _STAGE_CUMULATIVE[-1] + 0.0

Row = tuple[Any, ...]


def id_bits(bits: int) -> int:
    """The 128-bit integer of ``uuid.UUID(int=bits, version=4)``, without making the UUID."""
    return (bits & _ID_KEEP) | _ID_SET


def _weighted_pick(rng: random.Random) -> int:
    """``rng.choices(range(5), weights=STAGE_WEIGHTS)[0]`` with the same single draw.

    ``choices`` accumulates the weights and bisects one ``random() * total`` on every call;
    doing the accumulation once saves most of its cost and changes no draw.
    """
    return bisect_right(_STAGE_CUMULATIVE, rng.random() * _STAGE_TOTAL, 0, len(STAGE_WEIGHTS) - 1)


def uniform_below(rng: random.Random) -> Callable[[int], int]:
    """A ``below(n)`` that draws exactly as ``rng.randrange(n)`` and ``rng.choice`` do.

    CPython's ``choice(seq)`` is ``seq[_randbelow(len(seq))]`` and ``randrange(a, b)`` is
    ``a + _randbelow(b - a)``, where ``_randbelow`` draws ``n.bit_length()`` bits until they
    fall below ``n``. Doing that here skips two layers of argument checks per draw, which
    were most of the seed's drawing time. ``n`` must be positive.
    """
    getrandbits = rng.getrandbits

    def below(n: int) -> int:
        k = n.bit_length()
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return r

    return below


class Values:
    """Spells drawn values as Python objects (the rows of :func:`seed.generate`).

    ``ago`` is whole seconds before :data:`EPOCH`, ``days`` whole days after it; money is
    whole currency units; ``bits`` is an id's 128-bit integer (see :func:`id_bits`).
    """

    null: Any = None
    true: Any = True
    false: Any = False

    def uuid(self, bits: int) -> Any:
        return uuid.UUID(int=bits)

    def ts(self, ago: int) -> Any:
        return EPOCH - timedelta(seconds=ago)

    def date(self, days: int) -> Any:
        return (EPOCH + timedelta(days=days)).date()

    def money(self, units: int) -> Any:
        return Decimal(units)

    def int4(self, n: int) -> Any:
        return n


class _DayText(dict[int, str]):
    """ISO dates of EPOCH + n days, made on first use (a seed spans about 1000 of them)."""

    def __missing__(self, days: int) -> str:
        text = (EPOCH.date() + timedelta(days=days)).isoformat()
        self[days] = text
        return text


class CopyText(Values):
    """Spells drawn values as Postgres text-COPY fields (rows are then tab-joined).

    A timestamp is looked up, not formatted: its date from a per-day table and its time of
    day from a table of all 86,400 seconds, both in UTC with an explicit ``+00``.
    """

    null = "\\N"
    true = "t"
    false = "f"

    def __init__(self) -> None:
        self._days = _DayText()
        self._clock = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(86400)]

    def uuid(self, bits: int) -> str:
        # Postgres reads 32 hex digits without hyphens as the same uuid.
        return f"{bits:032x}"

    def ts(self, ago: int) -> str:
        # EPOCH is midnight UTC, so the day and the second of the day split cleanly.
        days, second = divmod(-ago, 86400)
        return f"{self._days[days]} {self._clock[second]}"

    def date(self, days: int) -> str:
        return self._days[days]

    def money(self, units: int) -> str:
        return str(units)

    def int4(self, n: int) -> str:
        return str(n)


def draw_profiles(rng: random.Random, scale: int, values: Values) -> list[Row]:
    """The owners' profile rows; index 0 is the admin. They are the first draws from
    ``rng``, so the owners can be made without drawing anything else."""
    below, getrandbits, rand = uniform_below(rng), rng.getrandbits, rng.random
    rows: list[Row] = []
    for i in range(max(1, OWNERS_PER_SCALE * scale)):
        first, last = _FIRST[below(len(_FIRST))], _LAST[below(len(_LAST))]
        oid = values.uuid(id_bits(getrandbits(128)))
        created = values.ts(round((400 + rand() * 300) * 86400))
        email = f"{first.lower()}.{last.lower()}.{i}@example.com"
        role = "Director" if i == 0 else "Sales Rep"
        admin = values.true if i == 0 else values.false
        rows.append((oid, first, last, email, role, values.null, admin, created, created))
    return rows


def _batches(table: str, rows: list[Row]) -> Iterator[tuple[str, list[Row]]]:
    for start in range(0, len(rows), BATCH_ROWS):
        yield table, rows[start : start + BATCH_ROWS]


def draw_rows(scale: int, seed: int, values: Values) -> Iterator[tuple[str, list[Row]]]:
    """Yield ``(table, rows)`` batches of the whole seed for (``scale``, ``seed``).

    Tables come in :data:`SEEDED_TABLES` order, each one's batches together; an empty
    table yields no batch. ``scale`` must already be checked. The draws happen lazily, as
    the batches are taken.
    """
    rng = random.Random(seed)
    # below(n) stands for rng.randrange(n) and seq[below(len(seq))] for rng.choice(seq).
    below, getrandbits, rand = uniform_below(rng), rng.getrandbits, rng.random
    uuid_of, ts, money, int4 = values.uuid, values.ts, values.money, values.int4
    null = values.null

    profiles = draw_profiles(rng, scale, values)
    yield from _batches("profiles", profiles)
    owner_ids = [p[0] for p in profiles]
    owner_names = [f"{p[1]} {p[2]}" for p in profiles]
    owner_count = len(owner_ids)

    stages_created = ts(_STAGES_AGO)
    stages = [
        (
            uuid_of(id_bits(getrandbits(128))),
            name,
            f"{name} stage",
            color,
            int4(pos),
            int4(prob),
            values.true if final else values.false,
            stages_created,
            stages_created,
        )
        for name, pos, prob, color, final in PIPELINE_STAGES
    ]
    yield "deal_stages", stages

    companies: list[Row] = []
    for i in range(COMPANIES_PER_SCALE * scale):
        name = f"{_ADJ[below(len(_ADJ))]} {_NOUN[below(len(_NOUN))]} {i}"
        slug = name.lower().replace(" ", "-")
        created = ts(round((300 + rand() * 300) * 86400))
        companies.append(
            (
                uuid_of(id_bits(getrandbits(128))),
                name,
                f"{slug}.example.com",
                _INDUSTRY[below(len(_INDUSTRY))],
                _SIZES[below(len(_SIZES))],
                f"https://{slug}.example.com",
                owner_ids[below(owner_count)],
                created,
                created,
            )
        )
    yield from _batches("companies", companies)

    contacts: list[Row] = []
    company_count = len(companies)
    for i in range(CONTACTS_PER_SCALE * scale):
        first, last = _FIRST[below(len(_FIRST))], _LAST[below(len(_LAST))]
        company = companies[i % company_count]
        created = ts(round((200 + rand() * 300) * 86400))
        contacts.append(
            (
                uuid_of(id_bits(getrandbits(128))),
                f"{first.lower()}.{last.lower()}.c{i}@example.org",
                first,
                last,
                _TITLES[below(len(_TITLES))],
                f"+44 20 {below(10**7):07d}",
                values.true if i < company_count else values.false,
                company[0],
                company[6],
                created,
                created,
            )
        )
    yield from _batches("contacts", contacts)

    # A deal's history rows are drawn with it but loaded after the activities.
    deals: list[Row] = []
    history: list[Row] = []
    batch: list[Row] = []
    contact_count = len(contacts)
    statuses = ["active"] * len(stages)
    statuses[[s[0] for s in PIPELINE_STAGES].index("Signed")] = "won"
    statuses[[s[0] for s in PIPELINE_STAGES].index("Lost")] = "lost"
    date_of = values.date
    for i in range(DEALS_PER_SCALE * scale):
        stage_index = _weighted_pick(rng)
        stage = stages[stage_index]
        company = companies[below(company_count)]
        contact = contacts[below(contact_count)]
        owner_id = owner_ids[below(owner_count)]
        created_days = 1 + rand() * 180
        stage_days = rand() * created_days
        one_off = _ONE_OFF[below(len(_ONE_OFF))]
        mrr = _MRR[below(len(_MRR))]
        close_in = -30 + below(150)
        deal_id = uuid_of(id_bits(getrandbits(128)))
        close = date_of(close_in) if rand() < 0.8 else null
        created_ago = round(created_days * 86400)
        stage_ago = round(stage_days * 86400)
        created = ts(created_ago)
        changed = ts(stage_ago)
        deal: Row = (
            deal_id,
            f"{company[1]} deal {i}",
            company[1],
            f"{contact[2]} {contact[3]}",
            contact[1],
            contact[5],
            money(one_off + 3 * mrr),
            money(one_off + 12 * mrr),
            f"Seeded deal {i}",
            stage[0],
            owner_id,
            close,
            stage[5],
            statuses[stage_index],
            money(one_off),
            money(mrr),
            company[0],
            contact[0],
            created,
            changed,
            changed,
        )
        deals.append(deal)
        batch.append(deal)
        if stage_index > 0 and rand() < 0.5:
            history.append(
                (
                    uuid_of(id_bits(getrandbits(128))),
                    deal_id,
                    stages[stage_index - 1][0],
                    owner_id,
                    created,
                    changed,
                    int4(created_ago - stage_ago),
                )
            )
        history.append(
            (uuid_of(id_bits(getrandbits(128))), deal_id, stage[0], owner_id, changed, null, null)
        )
        if len(batch) == BATCH_ROWS:
            yield "deals", batch
            batch = []
    if batch:
        yield "deals", batch

    batch = []
    deal_count = len(deals)
    for _ in range(ACTIVITIES_PER_SCALE * scale):
        owner_index = below(owner_count)
        picked = deals[below(deal_count)] if deals and rand() < 0.6 else None
        when = ts(round(rand() * 180 * 86400))
        batch.append(
            (
                uuid_of(id_bits(getrandbits(128))),
                owner_ids[owner_index],
                _ACTIVITY_TYPES[below(len(_ACTIVITY_TYPES))],
                "completed",
                _PRIORITIES[below(len(_PRIORITIES))],
                picked[2] if picked else companies[below(company_count)][1],
                owner_names[owner_index],
                null,
                money(below(20000)),
                when,
                picked[0] if picked else null,
                when,
                when,
            )
        )
        if len(batch) == BATCH_ROWS:
            yield "activities", batch
            batch = []
    if batch:
        yield "activities", batch
    del deals

    yield from _batches("deal_stage_history", history)
    epoch, expiry = ts(0), ts(-round((SESSION_EXPIRY - EPOCH).total_seconds()))
    yield (
        "sessions",
        [
            (hash_token(derive_token(seed, i)), owner_id, epoch, expiry)
            for i, owner_id in enumerate(owner_ids)
        ],
    )
