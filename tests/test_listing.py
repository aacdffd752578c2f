"""Specification of sixty_core.listing and of paging through /api/deals with its cursors."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from sixty_core.db.provision import connect
from sixty_core.errors import ValidationError
from sixty_core.listing import SORT_FIELDS, SORT_ORDERS, Cursor
from tests.api_support import Api, api_fixture

api = api_fixture("api", ["optimized", "legacy+bounded_lists", "legacy"])

ROW_ID = uuid.UUID("00000000-0000-0000-0000-000000000007")


@pytest.mark.parametrize(
    ("sort", "value", "expected"),
    [
        ("created_at", dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC), None),
        ("updated_at", dt.datetime(2025, 6, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))), None),
        ("value", Decimal("1234.50"), None),
        ("name", 'Acme, "quoted" deal', None),
    ],
)
def test_a_cursor_reads_back_as_its_columns_type(
    sort: str, value: object, expected: object
) -> None:
    """The value a cursor carries comes back as the type its column binds as (a datetime
    for timestamptz, a Decimal for numeric), equal to the row's value."""
    cursor = Cursor.after(sort, "desc", {sort: value, "id": ROW_ID})
    decoded = Cursor.decode(cursor.encode(), sort=sort, order="desc")
    assert decoded.sort_value() == value
    assert type(decoded.sort_value()) is type(value)
    assert decoded.id == ROW_ID


def test_a_cursor_of_another_sort_is_refused() -> None:
    cursor = Cursor.after("name", "asc", {"name": "x", "id": ROW_ID}).encode()
    with pytest.raises(ValidationError, match="another sort order"):
        Cursor.decode(cursor, sort="name", order="desc")


async def visible_ids(api: Api, owner_id: str | None) -> set[str]:
    conn = await connect(api.dsn)
    try:
        rows = await conn.fetch(
            "SELECT id FROM deals WHERE $1::uuid IS NULL OR owner_id = $1",
            uuid.UUID(owner_id) if owner_id else None,
        )
    finally:
        await conn.close()
    return {str(r["id"]) for r in rows}


def sort_key(deal: dict[str, object], sort: str) -> tuple[object, str]:
    raw = deal[sort]
    value: object = raw
    if sort in ("created_at", "updated_at"):
        value = dt.datetime.fromisoformat(str(raw))
    elif sort == "value":
        value = Decimal(str(raw))
    return value, str(deal["id"])


@pytest.mark.parametrize("who", ["user", "admin"])
@pytest.mark.parametrize("order", SORT_ORDERS)
@pytest.mark.parametrize("sort", list(SORT_FIELDS))
async def test_paging_sees_every_visible_row_exactly_once(
    api: Api, who: str, sort: str, order: str
) -> None:
    """Following next_cursor from the first page to the last, for every sort and order,
    a non-admin and an admin each see every deal visible to them exactly once, in order."""
    owner = api.user(1) if who == "user" else api.admin
    seen: list[dict[str, object]] = []
    params: dict[str, object] = {"sort": sort, "order": order, "limit": 37}
    for _ in range(100):  # bounded: an admin's 500+ deals are 14 pages
        response = await api.call("GET", "/api/deals", owner, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["data"]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    else:
        pytest.fail("paging did not end within 100 pages")
    ids = [str(d["id"]) for d in seen]
    assert len(ids) == len(set(ids)), "a row was served twice"
    assert set(ids) == await visible_ids(api, None if who == "admin" else owner.id)
    if "bounded_lists" in api.profile.flags:
        keys = [sort_key(d, sort) for d in seen]
        assert keys == sorted(keys, reverse=order == "desc")
