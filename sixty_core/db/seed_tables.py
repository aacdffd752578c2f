"""What the seed holds: its tables and their columns, the pipeline, and rows per scale unit.

Shared by the draw routine (:mod:`sixty_core.db.seed_rows`), the loaders
(:mod:`sixty_core.db.seed_load`) and :mod:`sixty_core.db.seed`, which re-exports the public
names.
"""

from __future__ import annotations

from datetime import UTC, datetime

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
