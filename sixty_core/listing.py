"""Deal-list queries: the validated request, its sort allow-list and the keyset cursor.

A leaf module (no database, no HTTP), shared by the API's parameter parsing, the OpenAPI
document and the repository.

A cursor is the last row's sort value and id, for one sort field and order, encoded as
URL-safe base64 JSON. :meth:`Cursor.decode` refuses malformed and forged cursors with a
clear :class:`ValidationError`; :meth:`Cursor.sort_value` turns the value back into the
Python type its column binds as (a ``timestamptz`` needs a datetime, a ``numeric`` a
Decimal), so a cursor the server issued always reads back.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sixty_core.errors import ValidationError

#: Sortable list fields -> SQL expression and the type its cursor value binds as.
SORT_FIELDS: dict[str, tuple[str, str]] = {
    "created_at": ("d.created_at", "timestamptz"),
    "updated_at": ("d.updated_at", "timestamptz"),
    "value": ("d.value", "numeric"),
    "name": ("d.name", "text"),
}
SORT_ORDERS = ("asc", "desc")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_MALFORMED = "cursor is malformed: pass next_cursor back unchanged"


@dataclass(frozen=True)
class Cursor:
    """Keyset position: the last row's sort value and id, for one sort field and order."""

    sort: str
    order: str
    value: str
    id: uuid.UUID

    @classmethod
    def after(cls, sort: str, order: str, row: dict[str, Any]) -> Cursor:
        """The cursor that continues a listing after ``row``."""
        return cls(sort, order, _text(row[sort]), row["id"])

    def encode(self) -> str:
        raw = json.dumps([self.sort, self.order, self.value, str(self.id)]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, *, sort: str, order: str) -> Cursor:
        """Parse a cursor; raise ValidationError if it is malformed or for another sort."""
        try:
            padded = text + "=" * (-len(text) % 4)
            s, o, value, ident = json.loads(base64.urlsafe_b64decode(padded))
            cursor = cls(str(s), str(o), str(value), uuid.UUID(str(ident)))
        except (ValueError, TypeError, binascii.Error):
            raise ValidationError(_MALFORMED) from None
        if (cursor.sort, cursor.order) != (sort, order):
            raise ValidationError("cursor belongs to another sort order: restart the listing")
        cursor.sort_value()  # a forged value is a clear 400 here, not a failed cast later
        return cursor

    def sort_value(self) -> Any:
        """The value as its column binds: datetime, Decimal or str. ValidationError if it
        does not read as that type."""
        kind = SORT_FIELDS[self.sort][1]
        try:
            if kind == "timestamptz":
                moment = dt.datetime.fromisoformat(self.value)
                if moment.tzinfo is None:
                    raise ValueError(self.value)
                return moment
            if kind == "numeric":
                number = Decimal(self.value)
                if not number.is_finite():
                    raise ValueError(self.value)
                return number
        except (ValueError, InvalidOperation):
            raise ValidationError(_MALFORMED) from None
        return self.value


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class ListQuery:
    """A deal-list request after validation."""

    visible_to: uuid.UUID | None  # None: an admin sees every owner's deals
    owner_id: uuid.UUID | None = None
    stage_id: uuid.UUID | None = None
    status: str | None = None
    search: str | None = None
    sort: str = "created_at"
    order: str = "desc"
    limit: int = DEFAULT_PAGE_SIZE
    offset: int = 0
    cursor: str | None = None
