"""The toxics a :class:`~sixty_core.reliability.proxy.FaultProxy` applies, as frozen dataclasses.

Each validates its fields on construction and raises :class:`ValueError` naming the
offending value. What each one does to a connection is tabled in the docstring of
:mod:`sixty_core.reliability.proxy`, which re-exports them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Direction = Literal["up", "down", "both"]
_DIRECTIONS = ("up", "down", "both")


def _check_direction(owner: str, direction: str) -> None:
    if direction not in _DIRECTIONS:
        raise ValueError(f"{owner}.direction must be 'up', 'down' or 'both', got {direction!r}")


def _check_ms(owner: str, field: str, value: float) -> None:
    # `not value >= 0` also catches NaN, which would otherwise sleep for no time silently.
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{owner}.{field} must be a finite number >= 0, got {value!r}")


def _check_int(owner: str, field: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{field} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Latency:
    """Hold each chunk ``ms`` milliseconds, +/- a uniform ``jitter_ms``, never below 0."""

    ms: float
    jitter_ms: float = 0.0
    direction: Direction = "both"

    def __post_init__(self) -> None:
        _check_ms("Latency", "ms", self.ms)
        _check_ms("Latency", "jitter_ms", self.jitter_ms)
        _check_direction("Latency", self.direction)


@dataclass(frozen=True)
class Bandwidth:
    """Forward at most ``bytes_per_s`` bytes per second."""

    bytes_per_s: int
    direction: Direction = "both"

    def __post_init__(self) -> None:
        _check_int("Bandwidth", "bytes_per_s", self.bytes_per_s, 1)
        _check_direction("Bandwidth", self.direction)


@dataclass(frozen=True)
class Slicer:
    """Trickle: forward in slices of ``chunk_bytes``, pausing ``delay_ms`` after each."""

    chunk_bytes: int
    delay_ms: float
    direction: Direction = "both"

    def __post_init__(self) -> None:
        _check_int("Slicer", "chunk_bytes", self.chunk_bytes, 1)
        _check_ms("Slicer", "delay_ms", self.delay_ms)
        _check_direction("Slicer", self.direction)


@dataclass(frozen=True)
class BlackHole:
    """Pass nothing, close nothing: packets dropped without an RST (P10, E2)."""


@dataclass(frozen=True)
class ResetPeer:
    """Reset live connections when set and new ones when accepted (P11)."""


@dataclass(frozen=True)
class LimitData:
    """Close the connection once ``bytes`` have been forwarded: a truncated body (E4)."""

    bytes: int
    direction: Direction = "down"

    def __post_init__(self) -> None:
        _check_int("LimitData", "bytes", self.bytes, 0)
        _check_direction("LimitData", self.direction)


@dataclass(frozen=True)
class SlowClose:
    """Pass the upstream's close on to the client ``delay_ms`` late."""

    delay_ms: float

    def __post_init__(self) -> None:
        _check_ms("SlowClose", "delay_ms", self.delay_ms)


Toxic = Latency | Bandwidth | Slicer | BlackHole | ResetPeer | LimitData | SlowClose
_TOXIC_TYPES = (Latency, Bandwidth, Slicer, BlackHole, ResetPeer, LimitData, SlowClose)
