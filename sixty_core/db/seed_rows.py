"""The seed's rows, drawn once from one ``random.Random(seed)``, spelled by a ``Values``.

:func:`draw_rows` is the only place that draws from the generator, so every spelling of the
seed sees the same sequence of draws and therefore the same values. How each value is
spelled is up to the :class:`~sixty_core.db.seed_values.Values` it is given: Python objects
for :func:`sixty_core.db.seed.generate`, binary COPY fields for the bulk loader.

Rows come in batches of at most :data:`BATCH_ROWS`, table by table, parents first
(see :func:`draw_rows`), so a loader can send one batch while the next is drawn.

Draw order is a contract: reordering, adding or removing a single draw changes every later
value and every checksum. The draws below keep the order of the original per-row code,
including ``rng.choices``' one ``random()`` per weighted pick (see :func:`_weighted_pick`);
``tests/test_seed_fast.py`` pins the original seed's checksums.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

from sixty_core.db.seed_tables import (
    ACTIVITIES_PER_SCALE,
    COMPANIES_PER_SCALE,
    CONTACTS_PER_SCALE,
    DEALS_PER_SCALE,
    OWNERS_PER_SCALE,
    PIPELINE_STAGES,
    SESSION_EXPIRY,
    STAGE_WEIGHTS,
)
from sixty_core.db.seed_values import EPOCH, Values
from sixty_core.tokens import derive_token, hash_token

#: Stages were created this many seconds before EPOCH (900 days).
_STAGES_AGO = 900 * 86400

#: Rows per batch: small enough that a streaming loader hands Postgres work often.
BATCH_ROWS = 1000

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


def draw_profiles(rng: random.Random, scale: int, values: Values) -> list[Row]:
    """The owners' profile rows; index 0 is the admin. They are the first draws from
    ``rng``, so the owners can be made without drawing anything else."""
    return _draw_profiles(rng, scale, values)[0]


def _draw_profiles(rng: random.Random, scale: int, values: Values) -> tuple[list[Row], list[str]]:
    """The profile rows and each owner's full name, unspelled (activities repeat it)."""
    text = values.text
    below, getrandbits, rand = uniform_below(rng), rng.getrandbits, rng.random
    rows: list[Row] = []
    names: list[str] = []
    for i in range(max(1, OWNERS_PER_SCALE * scale)):
        first, last = _FIRST[below(len(_FIRST))], _LAST[below(len(_LAST))]
        oid = values.uuid(id_bits(getrandbits(128)))
        created = values.ts(round((400 + rand() * 300) * 86400))
        email = f"{first.lower()}.{last.lower()}.{i}@example.com"
        role = "Director" if i == 0 else "Sales Rep"
        admin = values.true if i == 0 else values.false
        row = (oid, text(first), text(last), text(email), text(role), values.null, admin)
        rows.append((*row, created, created))
        names.append(f"{first} {last}")
    return rows, names


def _batches(table: str, rows: list[Row]) -> Iterator[tuple[str, list[Row]]]:
    for start in range(0, len(rows), BATCH_ROWS):
        yield table, rows[start : start + BATCH_ROWS]


def draw_rows(scale: int, seed: int, values: Values) -> Iterator[tuple[str, list[Row]]]:
    """Yield ``(table, rows)`` batches of the whole seed for (``scale``, ``seed``).

    Tables come parents first, each one's batches together, in :data:`SEEDED_TABLES` order
    but for ``deal_stage_history``, which comes before ``activities``: it is drawn with the
    deals, so a loader can store it while the activities are drawn. An empty table yields
    no batch. ``scale`` must already be checked. The draws happen lazily, as
    the batches are taken.
    """
    rng = random.Random(seed)
    # below(n) stands for rng.randrange(n) and seq[below(len(seq))] for rng.choice(seq).
    below, getrandbits, rand = uniform_below(rng), rng.getrandbits, rng.random
    uuid_of, ts, money, int4 = values.uuid, values.ts, values.money, values.int4
    text, null = values.text, values.null

    profiles, names = _draw_profiles(rng, scale, values)
    yield from _batches("profiles", profiles)
    owner_ids = [p[0] for p in profiles]
    owner_names = [text(name) for name in names]
    owner_count = len(owner_ids)

    stages_created = ts(_STAGES_AGO)
    stages = [
        (
            uuid_of(id_bits(getrandbits(128))),
            text(name),
            text(f"{name} stage"),
            text(color),
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
    company_names: list[str] = []  # unspelled, for the deals' names
    for i in range(COMPANIES_PER_SCALE * scale):
        name = f"{_ADJ[below(len(_ADJ))]} {_NOUN[below(len(_NOUN))]} {i}"
        slug = name.lower().replace(" ", "-")
        created = ts(round((300 + rand() * 300) * 86400))
        company_names.append(name)
        companies.append(
            (
                uuid_of(id_bits(getrandbits(128))),
                text(name),
                text(f"{slug}.example.com"),
                text(_INDUSTRY[below(len(_INDUSTRY))]),
                text(_SIZES[below(len(_SIZES))]),
                text(f"https://{slug}.example.com"),
                owner_ids[below(owner_count)],
                created,
                created,
            )
        )
    yield from _batches("companies", companies)

    contacts: list[Row] = []
    contact_names: list[str] = []  # unspelled, for the deals' contact names
    company_count = len(companies)
    for i in range(CONTACTS_PER_SCALE * scale):
        first, last = _FIRST[below(len(_FIRST))], _LAST[below(len(_LAST))]
        company = companies[i % company_count]
        created = ts(round((200 + rand() * 300) * 86400))
        contact_names.append(f"{first} {last}")
        contacts.append(
            (
                uuid_of(id_bits(getrandbits(128))),
                text(f"{first.lower()}.{last.lower()}.c{i}@example.org"),
                text(first),
                text(last),
                text(_TITLES[below(len(_TITLES))]),
                text(f"+44 20 {below(10**7):07d}"),
                values.true if i < company_count else values.false,
                company[0],
                company[6],
                created,
                created,
            )
        )
    yield from _batches("contacts", contacts)

    deals: list[Row] = []
    history: list[Row] = []
    batch: list[Row] = []
    contact_count = len(contacts)
    statuses = [
        text("won" if name == "Signed" else "lost" if name == "Lost" else "active")
        for name, *_ in PIPELINE_STAGES
    ]
    date_of = values.date
    for i in range(DEALS_PER_SCALE * scale):
        stage_index = _weighted_pick(rng)
        stage = stages[stage_index]
        company_index = below(company_count)
        company = companies[company_index]
        contact_index = below(contact_count)
        contact = contacts[contact_index]
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
            text(f"{company_names[company_index]} deal {i}"),
            company[1],
            text(contact_names[contact_index]),
            contact[1],
            contact[5],
            money(one_off + 3 * mrr),
            money(one_off + 12 * mrr),
            text(f"Seeded deal {i}"),
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
    yield from _batches("deal_stage_history", history)
    del history

    batch = []
    deal_count = len(deals)
    completed = text("completed")
    types = [text(t) for t in _ACTIVITY_TYPES]
    priorities = [text(p) for p in _PRIORITIES]
    for _ in range(ACTIVITIES_PER_SCALE * scale):
        owner_index = below(owner_count)
        picked = deals[below(deal_count)] if deals and rand() < 0.6 else None
        when = ts(round(rand() * 180 * 86400))
        batch.append(
            (
                uuid_of(id_bits(getrandbits(128))),
                owner_ids[owner_index],
                types[below(len(types))],
                completed,
                priorities[below(len(priorities))],
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

    epoch, expiry = ts(0), ts(-round((SESSION_EXPIRY - EPOCH).total_seconds()))
    yield (
        "sessions",
        [
            (text(hash_token(derive_token(seed, i))), owner_id, epoch, expiry)
            for i, owner_id in enumerate(owner_ids)
        ],
    )
