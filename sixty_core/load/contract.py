"""The API contract as a client checks it, step by step (DESIGN.md section 4).

:func:`check` returns None when a response keeps the contract and otherwise the reason it
fails, in words stable enough to count by (no ids, no timestamps): a 2xx whose body breaks
the contract is a failure like any 5xx, and its reason is what broke. Pure functions on
(status, body bytes), so the locustfile and the tests use the same rules.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

import msgspec

#: What ``data`` must be on success: anything, an object, a list, or a deal (an object
#: with a string ``id``).
DataShape = Literal["any", "object", "list", "deal"]
CONTRACT = "contract"
_decoder = msgspec.json.Decoder()


def decode(body: bytes) -> Any:
    """The JSON value of ``body``, or None when it is not JSON."""
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError:
        return None


def _error_code(document: Any) -> str | None:
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        code = document["error"].get("code")
        return code if isinstance(code, str) else None
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check(
    status: int, body: bytes, *, expect: Collection[int], data: DataShape = "any"
) -> str | None:
    """None if (``status``, ``body``) keeps the contract of a step that expects a status in
    ``expect`` and ``data`` of the given shape; else the reason it fails:

    - ``status 503 (upstream_unavailable), expected 201``: an unexpected status, with the
      envelope's error code when it has one;
    - ``contract: ...``: an expected status whose body is not JSON, not the envelope
      ``{data, error}``, carries an ``error`` on success, a ``data`` of the wrong shape,
      a deal without an ``id``, or a ``count`` that is not the length of ``data``.
    """
    document = decode(body)
    if status not in expect:
        code = _error_code(document)
        expected = "/".join(str(s) for s in sorted(expect))
        return f"status {status}{f' ({code})' if code else ''}, expected {expected}"
    if document is None:
        return f"{CONTRACT}: body is not JSON"
    if not isinstance(document, dict) or "data" not in document or "error" not in document:
        return f"{CONTRACT}: body is not the envelope {{data, error}}"
    if document["error"] is not None:
        return f"{CONTRACT}: error is set on a {status}: {_short(document['error'])}"
    payload = document["data"]
    if data == "list" and not isinstance(payload, list):
        return f"{CONTRACT}: data is not a list"
    if data in ("object", "deal") and not isinstance(payload, dict):
        return f"{CONTRACT}: data is not an object"
    if data == "deal" and not isinstance(payload.get("id"), str):
        return f"{CONTRACT}: data.id is missing"
    count = document.get("count")
    if count is not None and isinstance(payload, list) and count != len(payload):
        return f"{CONTRACT}: count {count} is not the length of data ({len(payload)})"
    return None


def payload(body: bytes) -> Any:
    """``data`` of an envelope body, or None."""
    document = decode(body)
    return document.get("data") if isinstance(document, dict) else None


def deal_id_anywhere(body: bytes) -> str | None:
    """The id of the deal in ``body`` wherever a lenient client would find it: ``data.id``
    or, in the legacy create's nested shape, ``data.data.id`` (what a direct insert's
    ``.select().single()`` gave the original client back). None when there is none."""
    data = payload(body)
    for candidate in (data, data.get("data") if isinstance(data, dict) else None):
        if isinstance(candidate, dict) and isinstance(candidate.get("id"), str):
            return str(candidate["id"])
    return None
