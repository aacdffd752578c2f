"""How the seed's drawn values are spelled: Python objects, or Postgres binary COPY fields.

The draw routine (:mod:`sixty_core.db.seed_rows`) hands every value it puts in a row to a
:class:`Values`, in plain terms: an id's 128 bits, a timestamp as whole seconds before
:data:`EPOCH`, a date as whole days after it, money as whole units, a string. :class:`Values`
spells them as ``UUID``, ``datetime``, ``Decimal`` and ``str`` (what ``generate()`` returns
and asyncpg can copy); :class:`CopyBinary` spells each as the field of Postgres' binary COPY
format, length prefix included, so a row is its fields joined and the server only copies
bytes instead of parsing text (that parsing was two thirds of its COPY time). Both spell the
same stored value; the seed tests load both and compare table checksums.
"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

#: Seeded timestamps are relative to this instant, never to the wall clock.
EPOCH = datetime(2025, 8, 1, tzinfo=UTC)

#: What starts and ends every binary COPY stream: signature, flags, no header extension;
#: then a field count of -1.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)

# Postgres counts timestamps in microseconds and dates in days from 2000-01-01 UTC.
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_EPOCH_US = (EPOCH - _PG_EPOCH) // timedelta(microseconds=1)
_EPOCH_DAY = (EPOCH - _PG_EPOCH).days
_LENGTH = struct.Struct(">i")
_TIMESTAMP = struct.Struct(">iq")
_INT4 = struct.Struct(">ii")
_UUID_LENGTH = _LENGTH.pack(16)


class Values:
    """Spells drawn values as Python objects (the rows of :func:`seed.generate`).

    ``ago`` is whole seconds before :data:`EPOCH`, ``days`` whole days after it; money is
    whole currency units; ``bits`` is an id's 128-bit integer.
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

    def text(self, s: str) -> Any:
        return s


class _Numerics(dict[int, bytes]):
    """Binary ``numeric`` fields of whole non-negative amounts, made on first use (a seed
    has a few dozen distinct deal amounts and 20,000 activity amounts)."""

    def __missing__(self, units: int) -> bytes:
        if units < 0:
            raise ValueError(f"seed amounts are never negative, got {units}")
        digits: list[int] = []  # base 10,000, least significant first
        rest = units
        while rest:
            rest, digit = divmod(rest, 10_000)
            digits.append(digit)
        digits.reverse()
        # ndigits, weight, sign (+), display scale 0: a numeric(12, 2) column rescales it.
        body = struct.pack(f">hhhh{len(digits)}h", len(digits), len(digits) - 1, 0, 0, *digits)
        field = _LENGTH.pack(len(body)) + body
        self[units] = field
        return field


class CopyBinary(Values):
    """Spells drawn values as binary COPY fields (length prefix included): a row is
    ``b"".join(fields)`` after its field count, see :func:`encode_rows`."""

    null = _LENGTH.pack(-1)
    true = _LENGTH.pack(1) + b"\x01"
    false = _LENGTH.pack(1) + b"\x00"

    def __init__(self) -> None:
        self._numerics = _Numerics()

    def uuid(self, bits: int) -> bytes:
        return _UUID_LENGTH + bits.to_bytes(16, "big")

    def ts(self, ago: int) -> bytes:
        return _TIMESTAMP.pack(8, _EPOCH_US - ago * 1_000_000)

    def date(self, days: int) -> bytes:
        return _INT4.pack(4, _EPOCH_DAY + days)

    def money(self, units: int) -> bytes:
        return self._numerics[units]

    def int4(self, n: int) -> bytes:
        return _INT4.pack(4, n)

    def text(self, s: str) -> bytes:
        data = s.encode()
        return _LENGTH.pack(len(data)) + data


def encode_rows(rows: list[tuple[bytes, ...]], columns: int) -> bytes:
    """Rows of :class:`CopyBinary` fields as the body of a binary COPY stream (no header
    or trailer: see :data:`COPY_HEADER`, :data:`COPY_TRAILER`)."""
    count = struct.pack(">h", columns)
    return b"".join([count + b"".join(row) for row in rows])
