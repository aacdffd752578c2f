"""What a leak test may see allocated and not freed without it being a leak: caches the
interpreter and the standard library keep for the process's life. Each with its reason."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: (file fragment, reason). A stack with a frame from one of these is not the component's.
INTERPRETER_CACHES: tuple[tuple[str, str], ...] = (
    # re compiles and caches patterns on first use (re._cache, 512 entries).
    ("re/_compiler.py", "re's compiled-pattern cache"),
    ("re/__init__.py", "re's compiled-pattern cache"),
    # typing caches parametrized generics (functools.lru_cache in typing._tp_cache).
    ("typing.py", "typing's cache of parametrized generics"),
    # The first use of a code path warms CPython's per-code-object inline caches and
    # interns identifiers; importlib keeps what it imported.
    ("<frozen importlib", "modules imported on first use stay imported"),
    ("linecache.py", "tracebacks cache source lines"),
)


def not_an_interpreter_cache(stack: Any) -> bool:
    """pytest-memray ``filter_fn`` (given a ``Stack`` of ``frames``): True (count it)
    unless a frame belongs to one of :data:`INTERPRETER_CACHES`."""
    frames: Iterable[Any] = stack.frames
    for frame in frames:
        filename = getattr(frame, "filename", "")
        if any(fragment in filename for fragment, _ in INTERPRETER_CACHES):
            return False
    return True
