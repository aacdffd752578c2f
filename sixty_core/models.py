"""Request and response schemas (msgspec Structs): the API's contract and OpenAPI source.

Decoding with these structs is the first line of input validation: unknown fields, wrong
types and oversize strings are refused before any handler runs.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

MAX_NAME = 200
MAX_TEXT = 5000
MAX_BULK_IDS = 500

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
ShortText = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
LongText = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
#: Money in the API is a JSON number; the repository stores it as numeric(12, 2).
Money = Annotated[float, msgspec.Meta(ge=0, le=9_999_999_999.99)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
DealStatus = Literal["active", "won", "lost"]


class DealCreate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Body of ``POST /api/deals``. ``value`` is accepted but recomputed by the database
    from ``one_off_revenue`` and ``monthly_mrr`` (the original's revenue trigger)."""

    name: Name | None = None
    company: Name | None = None
    owner_id: uuid.UUID | None = None
    stage_id: uuid.UUID | None = None
    contact_name: ShortText | None = None
    contact_email: ShortText | None = None
    contact_phone: ShortText | None = None
    description: LongText | None = None
    value: Money | None = None
    one_off_revenue: Money | None = None
    monthly_mrr: Money | None = None
    expected_close_date: dt.date | None = None
    probability: Percent | None = None
    status: DealStatus | None = None
    company_id: uuid.UUID | None = None
    primary_contact_id: uuid.UUID | None = None


class DealUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Body of ``PATCH /api/deals/{id}``: only these fields may change. ``version``, when
    given, must equal the deal's current version (else 409: someone changed it first)."""

    name: Name | None = None
    company: Name | None = None
    stage_id: uuid.UUID | None = None
    contact_name: ShortText | None = None
    contact_email: ShortText | None = None
    contact_phone: ShortText | None = None
    description: LongText | None = None
    one_off_revenue: Money | None = None
    monthly_mrr: Money | None = None
    expected_close_date: dt.date | None = None
    probability: Percent | None = None
    status: DealStatus | None = None
    company_id: uuid.UUID | None = None
    primary_contact_id: uuid.UUID | None = None
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class MoveRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/deals/{id}/move``."""

    stage_id: uuid.UUID


class BulkRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/deals/bulk``: one operation over up to 500 deals, all or nothing."""

    operation: Literal["update_stage", "delete"]
    deal_ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_BULK_IDS)]
    stage_id: uuid.UUID | None = None


class Deal(msgspec.Struct):
    """A deal as the API returns it: the response schema in ``/openapi.json``.

    Money is a JSON number (the database's numeric, as the responses encode it);
    timestamps are RFC 3339 strings. Every column a deal answer carries is listed, so
    schemathesis's response checks cover them all.
    """

    id: uuid.UUID
    name: str
    company: str
    value: float
    stage_id: uuid.UUID
    owner_id: uuid.UUID
    status: str
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    stage_changed_at: dt.datetime
    stage_name: str | None = None
    stage_color: str | None = None
    company_name: str | None = None
    days_in_stage: int | None = None
    contact_name: str | None = None
    contact_email: str | None = None
    contact_phone: str | None = None
    description: str | None = None
    one_off_revenue: float | None = None
    monthly_mrr: float | None = None
    annual_value: float | None = None
    expected_close_date: dt.date | None = None
    probability: int | None = None
    company_id: uuid.UUID | None = None
    primary_contact_id: uuid.UUID | None = None


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class ErrorEnvelope(msgspec.Struct):
    """Every failure: ``{"data": null, "error": {"code", "message"}}``."""

    data: None
    error: ErrorBody


#: Fields a client may set on create / update, in a fixed order (SQL column allow-list).
CREATE_COLUMNS: tuple[str, ...] = tuple(
    f for f in DealCreate.__struct_fields__ if f not in ("value",)
)
UPDATE_COLUMNS: tuple[str, ...] = tuple(f for f in DealUpdate.__struct_fields__ if f != "version")


#: Columns stored as numeric(12, 2): API floats become Decimals rounded to cents.
MONEY_COLUMNS = frozenset({"value", "one_off_revenue", "monthly_mrr"})


def to_db_value(column: str, value: Any) -> Any:
    """``value`` as the database wants it (money floats -> Decimal cents)."""
    if column in MONEY_COLUMNS and isinstance(value, int | float):
        return Decimal(str(value)).quantize(Decimal("0.01"))
    return value


def present_fields(struct: msgspec.Struct) -> dict[str, Any]:
    """The fields a client actually sent (not None), as a dict."""
    return {
        f: getattr(struct, f) for f in struct.__struct_fields__ if getattr(struct, f) is not None
    }
