"""Service caches: namespaced LRU+TTL stores with tags, async single-flight and stats.

One :class:`Cache` holds a bounded ``cachetools.TTLCache`` per namespace (a read refreshes
recency; an entry expires ``ttl_s`` after it was written) driven by an injected clock.
``get_or_load`` is cache-aside with single-flight, and it never stores a result that a write
made stale while the load was in flight (google/guava#1881): every write (``set``,
``invalidate``, ``invalidate_tags``, ``clear``) stamps the key, tag or namespace it touches
with a number from one monotonic sequence, a load remembers the sequence number at its start,
and it only stores (and only accepts new joiners) while nothing it depends on has a newer
stamp. Key and tag stamps are kept only for keys and tags that a running load depends on, so
they stay bounded by the loads in flight. Not thread-safe: use it from one event loop.

Cached values are shared by every caller, so they are stored frozen (:func:`freeze`):
dicts become :class:`FrozenRow` (a dict that refuses every change) and lists become
:class:`FrozenRows` (a tuple), recursively. Since a frozen value never changes, what is
computed from it (its JSON encoding, a page of it) can be remembered on it
(:func:`derived`) and lives exactly as long as the cached value. A caller that needs to
change a value copies it (``dict(row)``); a handler that tries to change it in place gets a
``TypeError`` instead of corrupting the cache for everyone. The loader's own caller gets
the frozen value too, so a miss and a hit behave alike.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any, TypeVar, cast

import msgspec
from cachetools import TTLCache

from sixty_core.db.recorder import count_joined_load
from sixty_core.errors import ConfigError
from sixty_core.types import Clock

T = TypeVar("T")


class FrozenRow(dict[str, Any]):
    """A dict whose contents cannot change; encoders and ``dict(row)`` see a plain dict."""

    __slots__ = ("_derived",)
    _derived: dict[Hashable, Any]

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("cached rows are shared and read-only: copy with dict(row) to change")

    __setitem__ = __delitem__ = __ior__ = _refuse  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenRow, (dict(self),))


class FrozenRows(tuple[Any, ...]):
    """A tuple of frozen values that can carry values derived from it (:func:`derived`).

    Tuple subclasses cannot declare non-empty ``__slots__``; instances get a ``__dict__``.
    """


def freeze(value: Any) -> Any:
    """``value`` with every dict made a :class:`FrozenRow` and every list a
    :class:`FrozenRows` tuple."""
    if isinstance(value, FrozenRow | FrozenRows):
        return value
    if isinstance(value, dict):
        return FrozenRow({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return FrozenRows(freeze(v) for v in value)
    return value


def derived(value: Any, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, remembered on ``value`` under ``key`` when ``value`` is frozen.

    ``compute`` must depend only on ``value`` (and on what ``key`` names): a frozen value
    never changes, so neither does the result. For any other value (an uncached read's
    plain list) it is computed every time.

    The result must not hold ``value`` itself (its items are fine): ``value`` -> memo ->
    result -> ``value`` is a reference cycle, so an evicted value would wait for the cycle
    collector instead of being freed at once. Under load such garbage piled up between
    full collections and the service's RSS crept; wrap ``value`` in a new container
    (``FrozenRows(value)``) where a result needs it.
    """
    memo: dict[Hashable, Any]
    if isinstance(value, FrozenRows):
        memo = value.__dict__  # type: ignore[assignment]  # (not typing.cast: a Python call)
    elif isinstance(value, FrozenRow):
        try:
            memo = value._derived
        except AttributeError:
            memo = value._derived = {}
    else:
        return compute()
    try:
        return memo[key]  # type: ignore[no-any-return]
    except KeyError:
        result = memo[key] = compute()
        return result


# As the API encodes (Decimal as a number); a type msgspec does not know is sized by its
# text instead of failing the store.
_json = msgspec.json.Encoder(decimal_format="number", enc_hook=str)


def encoded_size(value: Any) -> int:
    """The length of ``value``'s JSON (as the API encodes it): what a byte-bounded namespace
    charges for an entry when it is stored. It tracks what the entry holds: the rows, and
    the answers encoded from them and remembered on them (:func:`derived`), take a few
    times as many bytes, in proportion. msgspec measures it in about a microsecond per row
    (``timeit``, 50 deal-like rows: 49 µs), where a ``sys.getsizeof`` walk of every object
    took 300-430 µs and would have slowed every list read that misses. A value of a type
    msgspec does not know counts as its ``str``."""
    return len(_json.encode(value))


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    """One namespace: at most ``maxsize`` entries, each living ``ttl_s`` seconds, and, when
    ``max_bytes`` is set, values of at most that many bytes in all, measured as JSON
    (:func:`encoded_size`, when each is stored; least recently used entries make room). A
    value larger than the whole budget is returned to its callers but not kept."""

    name: str
    maxsize: int
    ttl_s: float
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("namespace name must be non-empty")
        if self.maxsize < 1:
            raise ValueError(f"namespace {self.name!r}: maxsize must be >= 1, got {self.maxsize}")
        if not self.ttl_s > 0:
            raise ValueError(f"namespace {self.name!r}: ttl_s must be > 0, got {self.ttl_s}")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(
                f"namespace {self.name!r}: max_bytes must be >= 1 (or None), got {self.max_bytes}"
            )


DEFAULT_NAMESPACES: tuple[NamespaceConfig, ...] = (
    NamespaceConfig("stages", maxsize=64, ttl_s=3600.0),
    NamespaceConfig("owners", maxsize=1024, ttl_s=900.0),
    NamespaceConfig("companies", maxsize=4096, ttl_s=900.0),
    NamespaceConfig("sessions", maxsize=10_000, ttl_s=60.0),
    NamespaceConfig("queries", maxsize=2048, ttl_s=300.0, max_bytes=16 * 1024 * 1024),
)


@dataclass(slots=True)
class _Counters:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    joins: int = 0
    load_errors: int = 0
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0
    stale_discards: int = 0
    too_large: int = 0


class _Store(TTLCache[Hashable, Any, float]):
    """A TTLCache that counts evictions and expiries and keeps a tag index in step."""

    def __init__(self, config: NamespaceConfig, clock: Clock) -> None:
        if config.max_bytes is None:
            super().__init__(config.maxsize, config.ttl_s, timer=clock)
        else:
            # cachetools bounds one measure: the bytes here; __setitem__ bounds the entries.
            super().__init__(config.max_bytes, config.ttl_s, timer=clock, getsizeof=encoded_size)
        self.config = config
        self.n = _Counters()
        self.entry_tags: dict[Hashable, frozenset[str]] = {}
        self.tag_index: dict[str, set[Hashable]] = {}

    def __setitem__(self, key: Hashable, value: Any) -> None:
        """Store ``value``, making room by bytes (cachetools) and by entries; ValueError
        (cachetools') when it is larger than the whole byte budget."""
        super().__setitem__(key, value)
        if self.config.max_bytes is not None:
            while len(self) > self.config.maxsize:
                self.popitem()

    def popitem(self) -> tuple[Hashable, Any]:
        # Called by TTLCache when full (capacity eviction) and by Cache.shrink; LRU first.
        key, value = super().popitem()
        self.n.evictions += 1
        self.untag(key)
        return key, value

    def expire(self, time: float | None = None) -> list[tuple[Hashable, Any]]:
        expired = super().expire(time)
        self.n.expirations += len(expired)
        for key, _ in expired:
            self.untag(key)
        return expired

    def tag(self, key: Hashable, tags: frozenset[str]) -> None:
        if tags:
            self.entry_tags[key] = tags
            for t in tags:
                self.tag_index.setdefault(t, set()).add(key)

    def untag(self, key: Hashable) -> None:
        for t in self.entry_tags.pop(key, ()):
            keys = self.tag_index[t]
            keys.discard(key)
            if not keys:
                del self.tag_index[t]

    def drop(self, key: Hashable) -> bool:
        """Remove ``key``; True if a live (unexpired) entry was removed."""
        self.untag(key)
        try:
            del self[key]  # TTLCache deletes an expired entry too, then raises KeyError
        except KeyError:
            return False
        return True


class _Flight:
    """One running load of (ns, key), shared by every waiter that joined it."""

    __slots__ = ("key", "ns", "start", "tags", "task", "waiters")

    def __init__(self, ns: str, key: Hashable, tags: frozenset[str], start: int) -> None:
        self.ns, self.key, self.tags, self.start = ns, key, tags, start
        self.task: asyncio.Task[Any] | None = None
        self.waiters = 0


def _count(counts: dict[Any, int], item: Hashable, delta: int) -> int:
    """Add ``delta`` to ``counts[item]``, dropping it at zero; return the new count."""
    n = counts.get(item, 0) + delta
    if n:
        counts[item] = n
    else:
        counts.pop(item, None)
    return n


class Cache:
    """Namespaced LRU+TTL caches for the service; see the module docstring for the contract.

    Raises :class:`~sixty_core.errors.ConfigError` for a namespace it was not built with, and
    ``ValueError`` for duplicate namespace names.
    """

    def __init__(
        self,
        namespaces: Iterable[NamespaceConfig] = DEFAULT_NAMESPACES,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._stores: dict[str, _Store] = {}
        for config in namespaces:
            if config.name in self._stores:
                raise ValueError(f"duplicate cache namespace {config.name!r}")
            self._stores[config.name] = _Store(config, clock)
        self._seq = 0  # the write sequence; stamps below are values of it
        self._ns_stamps = dict.fromkeys(self._stores, 0)
        self._key_stamps: dict[tuple[str, Hashable], int] = {}
        self._tag_stamps: dict[str, int] = {}
        self._flights: dict[tuple[str, Hashable], _Flight] = {}  # the joinable load per key
        self._running: set[_Flight] = set()  # every running load, joinable or not
        # How many running loads depend on each key / tag: only those need stamps.
        self._watched_keys: dict[tuple[str, Hashable], int] = {}
        self._watched_tags: dict[str, int] = {}

    # -- reads and writes -------------------------------------------------------------------

    def get(self, ns: str, key: Hashable) -> tuple[bool, Any]:
        """Return ``(True, value)`` on a hit (refreshing recency), ``(False, None)`` on a miss."""
        store = self._store(ns)
        try:
            value = store[key]
        except KeyError:
            store.n.misses += 1
            store.expire()  # count and unindex an expired entry now rather than later
            return False, None
        store.n.hits += 1
        return True, value

    def set(self, ns: str, key: Hashable, value: Any, *, tags: Iterable[str] = ()) -> None:
        """Store ``value`` under ``key`` with ``tags``; a load of ``key`` in flight won't store."""
        store = self._store(ns)
        self._stamp_key(ns, key)
        self._put(store, key, value, frozenset(tags))

    def preload(self, ns: str, items: Mapping[Hashable, Any], *, tags: Iterable[str] = ()) -> None:
        """``set`` every item of ``items`` with the same ``tags`` (e.g. stages at startup)."""
        frozen = frozenset(tags)
        for key, value in items.items():
            self.set(ns, key, value, tags=frozen)

    def invalidate(self, ns: str, key: Hashable) -> bool:
        """Drop ``key``; a load of it already in flight will neither store nor be joined.

        Returns True if a live entry was dropped.
        """
        store = self._store(ns)
        self._stamp_key(ns, key)
        dropped = store.drop(key)
        store.n.invalidations += dropped
        return dropped

    def invalidate_tags(self, *tags: str) -> int:
        """Drop every entry carrying any of ``tags`` in every namespace; return how many.

        Loads in flight that were started with any of these tags will neither store nor be
        joined.
        """
        self._seq += 1
        for t in tags:
            if t in self._watched_tags:
                self._tag_stamps[t] = self._seq
        total = 0
        for store in self._stores.values():
            keys: set[Hashable] = set()
            for t in tags:
                keys |= store.tag_index.get(t, set())
            dropped = sum(store.drop(key) for key in keys)
            store.n.invalidations += dropped
            total += dropped
        return total

    def clear(self, ns: str | None = None) -> int:
        """Drop every entry of ``ns`` (or of all namespaces); loads in flight there won't store.

        Returns how many live entries were dropped.
        """
        stores = list(self._stores.values()) if ns is None else [self._store(ns)]
        self._seq += 1
        total = 0
        for store in stores:
            self._ns_stamps[store.config.name] = self._seq
            dropped = len(store)
            store.clear()
            store.entry_tags.clear()
            store.tag_index.clear()
            store.n.invalidations += dropped
            total += dropped
        return total

    def shrink(self, fraction: float) -> int:
        """Evict ``ceil(fraction * entries)`` least recently used entries of every namespace.

        For the memory manager's emergency cleanup; counted as evictions. Returns how many
        were evicted. ``ValueError`` unless ``0 <= fraction <= 1``.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], got {fraction}")
        evicted = 0
        for store in self._stores.values():
            for _ in range(math.ceil(len(store) * fraction)):
                store.popitem()
                evicted += 1
        return evicted

    # -- cache-aside with single-flight -----------------------------------------------------

    async def get_or_load(
        self,
        ns: str,
        key: Hashable,
        loader: Callable[[], Awaitable[T]],
        *,
        tags: Iterable[str] = (),
    ) -> T:
        """Return the cached value, or run ``loader`` once for all concurrent callers.

        Concurrent misses of one key share one load (the first caller's ``tags`` apply). The
        loader's exception reaches every waiter and is never cached. Cancelling a waiter does
        not cancel the shared load unless it was the last waiter. A load that a write made
        stale still returns its value to its waiters but does not store it, and callers
        arriving after that write start a fresh load instead of joining it.
        """
        # A hit is the path every cached request takes: the store is read from the dict
        # directly and nothing is called that a hit does not need (typing.cast included).
        try:
            store = self._stores[ns]
        except KeyError:
            store = self._store(ns)  # raises the ConfigError naming the known ones
        try:
            value = store[key]
        except KeyError:
            store.n.misses += 1
        else:
            store.n.hits += 1
            return value  # type: ignore[no-any-return]
        flight = self._flights.get((ns, key))
        if flight is None or self._is_stale(flight):
            flight = self._start_load(store, key, loader, frozenset(tags))
        else:
            store.n.joins += 1
            count_joined_load()  # the load's statements are counted for its starter
        return await self._wait(flight)  # type: ignore[no-any-return]

    def _start_load(
        self,
        store: _Store,
        key: Hashable,
        loader: Callable[[], Awaitable[Any]],
        tags: frozenset[str],
    ) -> _Flight:
        ns = store.config.name
        flight = _Flight(ns, key, tags, start=self._seq)
        # Register before create_task: an eager task factory may run the load to completion
        # inside create_task, and _finish must then find (and remove) this flight.
        self._flights[(ns, key)] = flight
        self._running.add(flight)
        _count(self._watched_keys, (ns, key), +1)
        for t in tags:
            _count(self._watched_tags, t, +1)
        task = asyncio.get_running_loop().create_task(
            self._run_load(store, flight, loader), name=f"sixty-cache-load:{ns}"
        )
        task.add_done_callback(lambda t: self._finish(flight, t))
        flight.task = task
        return flight

    async def _run_load(
        self, store: _Store, flight: _Flight, loader: Callable[[], Awaitable[Any]]
    ) -> Any:
        store.n.loads += 1
        try:
            try:
                value = freeze(await loader())
            except Exception:
                store.n.load_errors += 1
                raise
            # No await between the staleness check and the store: no write can slip between.
            if self._is_stale(flight):
                store.n.stale_discards += 1
            else:
                self._put(store, flight.key, value, flight.tags)
            return value
        finally:
            # Detach in the same step as the store, so a caller arriving next sees the stored
            # value or, after an error, starts a new load instead of joining a finished one.
            self._detach(flight)

    async def _wait(self, flight: _Flight) -> Any:
        task = flight.task
        assert task is not None
        flight.waiters += 1
        try:
            # shield: cancelling one waiter must not cancel the load the others wait for.
            return await asyncio.shield(task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not task.done():
                # Every waiter was cancelled: stop the load, and detach it so that a caller
                # arriving before the cancellation lands starts afresh instead of joining it.
                self._detach(flight)
                task.cancel()

    def _finish(self, flight: _Flight, task: asyncio.Task[Any]) -> None:
        # A done callback rather than a `finally` in _run_load: a task cancelled before its
        # first step never runs its coroutine's `finally`.
        if not task.cancelled():
            task.exception()  # retrieved, so a load nobody awaits logs no "never retrieved"
        self._detach(flight)
        self._running.discard(flight)
        if not _count(self._watched_keys, (flight.ns, flight.key), -1):
            self._key_stamps.pop((flight.ns, flight.key), None)
        for t in flight.tags:
            if not _count(self._watched_tags, t, -1):
                self._tag_stamps.pop(t, None)

    def _detach(self, flight: _Flight) -> None:
        if self._flights.get((flight.ns, flight.key)) is flight:
            del self._flights[(flight.ns, flight.key)]

    # -- stamps (generations) ---------------------------------------------------------------

    def _stamp_key(self, ns: str, key: Hashable) -> None:
        self._seq += 1
        # Unwatched keys need no stamp: a load starting later has a start >= this stamp.
        if (ns, key) in self._watched_keys:
            self._key_stamps[(ns, key)] = self._seq

    def _is_stale(self, flight: _Flight) -> bool:
        start = flight.start
        return (
            self._ns_stamps[flight.ns] > start
            or self._key_stamps.get((flight.ns, flight.key), 0) > start
            or any(self._tag_stamps.get(t, 0) > start for t in flight.tags)
        )

    # -- helpers and stats ------------------------------------------------------------------

    def _store(self, ns: str) -> _Store:
        try:
            return self._stores[ns]
        except KeyError:
            known = ", ".join(sorted(self._stores))
            raise ConfigError(f"unknown cache namespace {ns!r} (known: {known})") from None

    @staticmethod
    def _put(store: _Store, key: Hashable, value: Any, tags: frozenset[str]) -> None:
        store.untag(key)
        try:
            store[key] = freeze(value)  # may evict the LRU entry (and unindex it) via popitem
        except ValueError:
            # Larger than the namespace's byte budget: its callers have it, the cache not.
            # An older value under the key goes too: untagged, it would miss invalidations.
            store.drop(key)
            store.n.too_large += 1
            return
        store.tag(key, tags)

    def get_stats(self) -> dict[str, Any]:
        """Counters since the last ``reset_stats``: totals plus a ``namespaces`` breakdown.

        ``cache_evictions`` counts capacity and ``shrink`` evictions, ``cache_invalidations``
        live entries dropped by ``invalidate``/``invalidate_tags``/``clear``,
        ``cache_stale_discards`` load results not stored because a write overtook them,
        ``cache_too_large`` values not stored because they exceed their byte budget. A
        ``get_or_load`` that joins a load in flight counts as a miss and a join, not a load.
        """
        per: dict[str, dict[str, Any]] = {}
        for name, store in self._stores.items():
            entries = len(store)  # expires first, so expirations are up to date
            per[name] = {
                **asdict(store.n),
                "entries": entries,
                "maxsize": store.config.maxsize,
                "ttl_s": store.config.ttl_s,
                # Bytes held and allowed, where the namespace is byte-bounded (else None).
                "bytes": None if store.config.max_bytes is None else int(store.currsize),
                "max_bytes": store.config.max_bytes,
            }
        totals = {
            f"cache_{f.name}": sum(p[f.name] for p in per.values()) for f in fields(_Counters)
        }
        looked_up = totals["cache_hits"] + totals["cache_misses"]
        return {
            **totals,
            "cache_entries": sum(p["entries"] for p in per.values()),
            "cache_hit_rate": totals["cache_hits"] / looked_up if looked_up else 0.0,
            "cache_loads_in_flight": len(self._running),
            "namespaces": per,
        }

    def reset_stats(self) -> None:
        """Zero every counter; entries and loads in flight are untouched."""
        for store in self._stores.values():
            store.n = _Counters()


# Outside quotes, runs of whitespace collapse; quoted literals and identifiers stay verbatim.
_SQL_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\s+")


# The service's SQL texts are a small fixed set (composed from allow-listed parts), so
# each is normalized once; profiling showed normalizing on every lookup cost 16% of a
# cached list request.
@functools.lru_cache(maxsize=1024)
def _normalize_sql(sql: str) -> str:
    return _SQL_TOKENS.sub(lambda m: m[0] if m[0][0] in "'\"" else " ", sql).strip()


#: Parameter types that are their own key part (checked early: most parameters are these;
#: a UUID, the most common, is checked before them, by its number).
_SCALARS = frozenset({str, int, float, bool, type(None), Decimal})


def _freeze(value: Any) -> Hashable:
    # Tag every value with its type: 1, 1.0, True and "1" are equal or alike in Python but
    # bind differently in SQL, so they must not share a key.
    if isinstance(value, uuid.UUID):
        # By its 128-bit number: a UUID hashes and compares in Python code (``__hash__``,
        # ``__eq__``), called again at every lookup of the key; an int does both in C.
        # A cached deal read (two UUID parameters) looked its key up 2 µs faster (timeit).
        # asyncpg's own UUID type (ids read from rows: a user's id) is a subclass, and the
        # same value keys the same whichever type carries it.
        return ("UUID", value.int)
    kind = type(value)
    if kind in _SCALARS:
        return (kind.__qualname__, value)
    if isinstance(value, list | tuple):
        return (type(value).__qualname__, tuple(_freeze(v) for v in value))
    if isinstance(value, dict):
        items = [(_freeze(k), _freeze(v)) for k, v in value.items()]
        return ("dict", tuple(sorted(items, key=repr)))
    if isinstance(value, set | frozenset):
        return ("set", tuple(sorted((_freeze(v) for v in value), key=repr)))
    if isinstance(value, Hashable):
        return (type(value).__qualname__, value)
    raise TypeError(f"query parameter of type {type(value).__qualname__} cannot be a cache key")


def query_key(sql: str, params: Sequence[Any]) -> Hashable:
    """A cache key for a SELECT result: the full normalized SQL plus every parameter.

    Whitespace runs outside quotes collapse and the ends are stripped; nothing is truncated.
    Parameters keep their type (``1``, ``"1"``, ``True`` differ); lists, tuples, dicts and
    sets become nested tuples deterministically. ``TypeError`` for another unhashable type.
    Comments and dollar-quoted strings are not parsed: bind values as parameters.
    """
    # A list comprehension, not a generator: every cached read builds its key, and a
    # generator's set-up and resumptions cost a deal's key (two UUIDs) 0.80 µs against
    # 0.64 µs (timeit).
    return ("sql", _normalize_sql(sql), tuple([_freeze(p) for p in params]))


class Memo:
    """One value computed at most once per ``ttl_s``, single-flight: concurrent callers of
    :meth:`get` during a computation wait for it instead of computing again. An error is
    not remembered. Kept apart from :class:`Cache` so it never counts in the service's
    hit rate."""

    def __init__(self, *, ttl_s: float, clock: Clock = time.monotonic) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._value: Any = None
        self._at: float | None = None
        self.computed = 0

    async def get(self, compute: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            if self._at is None or self._clock() - self._at >= self._ttl_s:
                self._value = freeze(await compute())
                self._at = self._clock()
                self.computed += 1
            return cast(T, self._value)
