"""The wire contract between the deal service and the edge upstream.

``POST {EDGE_PREFIX}/deals`` with a JSON object body and an optional ``Idempotency-Key``
answers ``201 {"data": deal, "error": null}`` or ``{"data": null, "error": "<message>"}``
with a 4xx/5xx status. Every answer of the upstream carries :data:`STATEMENTS_HEADER`: the
statements that request sent to Postgres, which the service adds to its own request's count.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid

EDGE_PREFIX = "/functions/v1"
DEALS_PATH = f"{EDGE_PREFIX}/deals"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Statements the upstream sent to Postgres for this request (a decimal integer).
STATEMENTS_HEADER = "X-Sixty-Queries"
#: Longest upstream error text passed on to a caller.
MAX_DETAIL_CHARS = 200
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_BODY_BYTES = 1024 * 1024  # requests to the upstream and responses to the clients


def _json_default(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_json(value: object) -> bytes:
    """Compact JSON; UUIDs and dates as strings, Decimals as numbers."""
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()
