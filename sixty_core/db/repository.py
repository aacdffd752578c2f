"""Every SQL statement of the deal service, with parameters always bound.

Identifiers that vary (sort column, insert/update column lists) come only from allow-lists
in this module or in :mod:`sixty_core.models`; values are always ``$n`` parameters.

Statements are counted on the connection (:mod:`sixty_core.db.recorder`), not here. Reads
may go through
a :class:`ReadCache` strategy: :class:`NoReadCache` (every read hits Postgres) or
:class:`SelectResultCache` (the optimized profile's SELECT result cache, keyed by the full
SQL and every parameter, tagged by table and owner). Every write invalidates the tags it
touches after it commits, and the cache refuses to store a load that a write overtook.

Database failures are translated here, so no asyncpg text ever reaches a client:
connection loss and timeouts become :class:`DatabaseUnavailableError`, constraint
violations become :class:`ValidationError` or :class:`ConflictError`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, NoReturn, Protocol

import asyncpg

from sixty_core.cache import Cache, FrozenRows, derived, query_key
from sixty_core.errors import (
    ConflictError,
    DatabaseUnavailableError,
    IdempotencyKeyReusedError,
    ValidationError,
)
from sixty_core.listing import SORT_FIELDS, Cursor, ListQuery
from sixty_core.models import CREATE_COLUMNS, UPDATE_COLUMNS, to_db_value
from sixty_core.types import Row

#: Columns of ``deals`` that are bookkeeping of ours, never shown to a client.
INTERNAL_DEAL_COLUMNS = frozenset({"idempotency_key", "idempotency_fingerprint"})

#: The columns of a deal returned to clients (INTERNAL_DEAL_COLUMNS stay internal).
_DEAL_COLUMNS = (
    "id, name, company, contact_name, contact_email, contact_phone, value, description, "
    "stage_id, owner_id, expected_close_date, probability, status, one_off_revenue, "
    "monthly_mrr, annual_value, company_id, primary_contact_id, version, created_at, "
    "updated_at, stage_changed_at"
)
_DEAL_VIEW_SELECT = (
    "SELECT "
    + ", ".join(f"d.{c.strip()}" for c in _DEAL_COLUMNS.split(","))
    + ", s.name AS stage_name, s.color AS stage_color, "
    # A lookup per returned row, by primary key, rather than a join: for an owner's page
    # the planner hashed the whole companies table (1.2 ms at 2,500 companies, growing
    # with it), so a page's cost grew with the data instead of with the page.
    "(SELECT c.name FROM companies c WHERE c.id = d.company_id) AS company_name, "
    "floor(extract(epoch FROM now() - d.stage_changed_at) / 86400)::int AS days_in_stage "
)
_DEAL_VIEW_JOINS = "JOIN deal_stages s ON s.id = d.stage_id "


class Acquirer(Protocol):
    """What the repository needs of a pool: an async context manager giving a connection."""

    def acquire(self) -> Any: ...


# --- read cache strategies ------------------------------------------------------------


class ReadCache(Protocol):
    """How repository reads are served: straight from Postgres, or through a cache.

    ``tags`` may be one-shot (a generator, made lazily by the repository): read it at
    most once, and only when a result is stored."""

    async def read(
        self,
        sql: str,
        params: Sequence[Any],
        tags: Iterable[str],
        load: Callable[[], Awaitable[Any]],
    ) -> Any: ...

    def invalidate(self, tags: Iterable[str]) -> None: ...


class NoReadCache:
    """Every read reaches Postgres (the legacy profile: the original's query cache had no
    callers, ORIGINAL_SYSTEM.md §0 and §3.5)."""

    async def read(
        self,
        sql: str,
        params: Sequence[Any],
        tags: Iterable[str],
        load: Callable[[], Awaitable[Any]],
    ) -> Any:
        return await load()

    def invalidate(self, tags: Iterable[str]) -> None:
        return None


class SelectResultCache:
    """SELECT results cached 5 min in the ``queries`` namespace of a :class:`Cache`.

    The key is the full normalized SQL plus every parameter (the original keyed on a
    100-character prefix, so different queries collided). Entries carry table and owner
    tags; every write invalidates its tags after commit.
    """

    namespace = "queries"

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def read(
        self,
        sql: str,
        params: Sequence[Any],
        tags: Iterable[str],
        load: Callable[[], Awaitable[Any]],
    ) -> Any:
        # ``tags`` may be lazy (a generator): the cache reads them only on a miss.
        return await self._cache.get_or_load(
            self.namespace, query_key(sql, params), load, tags=tags
        )

    def invalidate(self, tags: Iterable[str]) -> None:
        self._cache.invalidate_tags(*tags)


def _page(rows: Sequence[Row], query: ListQuery) -> tuple[Sequence[Row], str | None]:
    """The first ``query.limit`` of ``rows``, fetched with one extra because more follow
    (the caller returns a result that fits the page as it is), and the next page's cursor
    (None for an empty page). A frozen result stays frozen."""
    page = rows[: query.limit]
    if isinstance(rows, FrozenRows):
        page = FrozenRows(page)
    next_cursor = Cursor.after(query.sort, query.order, page[-1]).encode() if page else None
    return page, next_cursor


# --- tags --------------------------------------------------------------------------------


#: The hottest read, built once.
_GET_DEAL_SQL = (
    _DEAL_VIEW_SELECT
    + "FROM deals d "
    + _DEAL_VIEW_JOINS
    + "WHERE d.id = $1 AND ($2::uuid IS NULL OR d.owner_id = $2)"
)


def deal_read_tags(visible_to: uuid.UUID | None) -> tuple[str, ...]:
    """Tags of a deal read: an owner-scoped read, or ``deals:all`` for an admin's read."""
    return (f"deals:owner:{visible_to}",) if visible_to else ("deals:all",)


def _deal_tags(deal_id: uuid.UUID, visible_to: uuid.UUID | None) -> Iterator[str]:
    """Tags of one deal's read, made only when a cache asks for them: a read that no
    cache stores (and a cache hit) never formats the two UUIDs (4 µs of 4.5 with
    ``timeit``; the rest makes the generator)."""
    yield f"deal:{deal_id}"
    yield from deal_read_tags(visible_to)


def deal_write_tags(
    owner_ids: Iterable[uuid.UUID | str], deal_ids: Iterable[Any] = ()
) -> list[str]:
    """Tags a write to these owners' deals must invalidate (their reads and admins')."""
    tags = ["deals:all"]
    tags += [f"deals:owner:{o}" for o in set(map(str, owner_ids))]
    tags += [f"deal:{d}" for d in deal_ids]
    return tags


# --- errors ------------------------------------------------------------------------------


def _translated(exc: BaseException) -> Exception | None:
    """The sixty error, with a message safe to show a client, for an asyncpg failure; None
    for anything else (it passes through unchanged)."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return ConflictError("a record with this information already exists")
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return ValidationError(
            "a referenced record (stage, owner, company or contact) does not exist"
        )
    if isinstance(exc, asyncpg.CheckViolationError):
        return ValidationError("a field is out of its allowed range")
    if isinstance(exc, asyncpg.NotNullViolationError):
        return ValidationError(f"{exc.column_name or 'a required field'} is required")
    if isinstance(exc, asyncpg.DataError | asyncpg.InvalidTextRepresentationError):
        return ValidationError("a field has an invalid value")
    if isinstance(exc, asyncpg.QueryCanceledError):
        return DatabaseUnavailableError("the database took too long to answer")
    if isinstance(exc, asyncpg.TransactionRollbackError | asyncpg.LockNotAvailableError):
        # Deadlock, serialization failure, lock timeout: the same request may succeed
        # when sent again, so it is a conflict, not a server error.
        return ConflictError("the deal was changed concurrently; send the request again")
    if isinstance(exc, asyncpg.OperatorInterventionError | asyncpg.InsufficientResourcesError):
        # Admin shutdown / crash shutdown / out of disk or memory on the server.
        return DatabaseUnavailableError("the database is unavailable")
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | OSError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError,
    ):
        return DatabaseUnavailableError("the database is unavailable")
    return None


class translated_errors:
    """Map asyncpg failures to sixty errors whose messages are safe to show a client.

    A class rather than an ``asynccontextmanager`` generator: every statement passes through
    it, and a generator-based manager costs a few microseconds per use.
    """

    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        # Never swallows: an asyncpg failure is replaced by its mapped error, the rest pass.
        if isinstance(exc, Exception):
            raise_translated(exc)
        return False


def raise_translated(exc: Exception) -> NoReturn:
    """Raise the client-safe sixty error of ``exc``, or ``exc`` itself when it has none.

    For an ``except`` clause around a single statement: in Python 3.11 a ``try`` costs
    nothing until something is raised, where ``async with translated_errors()`` runs two
    coroutines per statement (0.8 µs measured with ``timeit``)."""
    mapped = _translated(exc)
    if mapped is None:
        raise exc
    raise mapped from None


def _row(record: asyncpg.Record | None) -> Row | None:
    return dict(record) if record is not None else None


# --- the repository ----------------------------------------------------------------------


class Repository:
    """All SQL of the service. Takes a pool and a read-cache strategy; holds no state."""

    def __init__(self, pool: Acquirer, *, read_cache: ReadCache | None = None) -> None:
        self._pool = pool
        self._reads: ReadCache = read_cache or NoReadCache()

    # low level: every statement goes through these, so every one is counted

    async def _fetch(self, sql: str, *params: Any) -> list[Row]:
        try:
            async with self._pool.acquire() as conn:
                return [dict(r) for r in await conn.fetch(sql, *params)]
        except Exception as exc:
            raise_translated(exc)

    async def _fetchrow(self, sql: str, *params: Any) -> Row | None:
        try:
            async with self._pool.acquire() as conn:
                return _row(await conn.fetchrow(sql, *params))
        except Exception as exc:
            raise_translated(exc)

    async def _cached(
        self, sql: str, params: Sequence[Any], tags: Iterable[str], *, one: bool = False
    ) -> Any:
        async def load() -> Any:
            if one:
                return await self._fetchrow(sql, *params)
            return await self._fetch(sql, *params)

        return await self._reads.read(sql, params, tags, load)

    def invalidate(self, tags: Iterable[str]) -> None:
        """Invalidate cached reads carrying any of ``tags`` (called after each write)."""
        self._reads.invalidate(tags)

    # sessions and users

    async def find_session(self, token_hash: str) -> Row | None:
        """The live (unrevoked, unexpired) session with this token hash, or None."""
        return await self._fetchrow(
            "SELECT user_id, expires_at FROM sessions "
            "WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()",
            token_hash,
        )

    async def find_profile(self, user_id: uuid.UUID) -> Row | None:
        """The profile of ``user_id``, or None."""
        return await self._fetchrow(
            "SELECT id, email, first_name, last_name, is_admin FROM profiles WHERE id = $1",
            user_id,
        )

    async def find_session_user(self, token_hash: str) -> Row | None:
        """Session and profile in one query: the user behind a live token, or None."""
        return await self._fetchrow(
            "SELECT p.id, p.email, p.first_name, p.last_name, p.is_admin, s.expires_at "
            "FROM sessions s JOIN profiles p ON p.id = s.user_id "
            "WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()",
            token_hash,
        )

    async def revoke_session(self, token_hash: str) -> bool:
        """Revoke a live session; True if one was revoked."""
        row = await self._fetchrow(
            "UPDATE sessions SET revoked_at = now() "
            "WHERE token_hash = $1 AND revoked_at IS NULL RETURNING token_hash",
            token_hash,
        )
        return row is not None

    # health

    async def health_probe(self) -> Row:
        """The server's ``now()``: one cheap round trip, for the open health check."""
        row = await self._fetchrow("SELECT now() AS now")
        assert row is not None
        return row

    async def server_version(self) -> str:
        """``version()`` of the server (only the admins' detailed health shows it)."""
        row = await self._fetchrow("SELECT version() AS version")
        assert row is not None
        return str(row["version"])

    async def table_counts(self) -> dict[str, int]:
        row = await self._fetchrow(
            "SELECT (SELECT count(*) FROM deals) AS deals, "
            "(SELECT count(*) FROM companies) AS companies, "
            "(SELECT count(*) FROM activities) AS activities"
        )
        assert row is not None
        return {k: int(v) for k, v in row.items()}

    # static data

    async def list_stages(self) -> list[Row]:
        return await self._fetch(
            "SELECT id, name, description, color, order_position, default_probability, "
            "is_final FROM deal_stages ORDER BY order_position, created_at"
        )

    async def list_owners(self) -> list[Row]:
        return await self._fetch(
            "SELECT id, first_name, last_name, email, stage, avatar_url, is_admin, "
            "coalesce(nullif(trim(coalesce(first_name, '') || ' ' || coalesce(last_name, '')), "
            "''), email, 'Unknown User') AS full_name "
            "FROM profiles ORDER BY first_name, last_name, id"
        )

    async def list_companies(self) -> list[Row]:
        return await self._fetch(
            "SELECT id, name, domain, industry, size, website, owner_id "
            "FROM companies ORDER BY name"
        )

    # deal reads

    async def list_deals_unbounded(self, query: ListQuery) -> list[Row]:
        """The legacy list: ``SELECT *`` of every visible deal, no limit, no joins."""
        where, params = _filters(query)
        sql = (
            "SELECT * FROM deals d"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY d.created_at DESC, d.id DESC"
        )
        rows: list[Row] = await self._cached(sql, params, deal_read_tags(query.visible_to))
        return rows

    async def list_deals_page(self, query: ListQuery) -> tuple[Sequence[Row], str | None]:
        """The optimized list: one joined query, ``limit`` rows, keyset or offset paging.

        Returns the page and the cursor of the next page (None on the last page).
        """
        column, cast = SORT_FIELDS[query.sort]
        where, params = _filters(query)
        direction = "DESC" if query.order == "desc" else "ASC"
        comparator = "<" if query.order == "desc" else ">"
        if query.cursor is not None:
            cursor = Cursor.decode(query.cursor, sort=query.sort, order=query.order)
            # Bound as its column's type: asyncpg refuses a str for a timestamptz parameter.
            params += [cursor.sort_value(), cursor.id]
            where.append(
                f"({column}, d.id) {comparator} (${len(params) - 1}::{cast}, ${len(params)}::uuid)"
            )
        params += [query.limit + 1, query.offset if query.cursor is None else 0]
        sql = (
            _DEAL_VIEW_SELECT
            + "FROM deals d "
            + _DEAL_VIEW_JOINS
            + ("WHERE " + " AND ".join(where) + " " if where else "")
            + f"ORDER BY {column} {direction}, d.id {direction} "
            + f"LIMIT ${len(params) - 1} OFFSET ${len(params)}"
        )
        rows = await self._cached(sql, params, deal_read_tags(query.visible_to))
        if len(rows) <= query.limit:
            # The whole result is the page. Not remembered on ``rows``: a memo holding
            # ``rows`` would be a reference cycle (see ``derived``).
            return rows, None
        # The SQL and parameters (limit included) key the cached rows, so the page and its
        # cursor are the same for every hit: made once per cached result.
        return derived(rows, "page", lambda: _page(rows, query))

    async def get_deal(self, deal_id: uuid.UUID, visible_to: uuid.UUID | None) -> Row | None:
        """One deal with its stage and company names, if visible to the caller."""
        tags = _deal_tags(deal_id, visible_to)
        return await self._cached(_GET_DEAL_SQL, [deal_id, visible_to], tags, one=True)  # type: ignore[no-any-return]

    async def pipeline_stats(self, owner_id: uuid.UUID | None) -> list[Row]:
        """Per stage: deal counts and values (active deals weighted by stage probability)."""
        sql = (
            "SELECT s.id AS stage_id, s.name AS stage_name, s.color, s.order_position, "
            "s.default_probability, count(d.id) AS deal_count, "
            "count(d.id) FILTER (WHERE d.status = 'active') AS active_count, "
            "count(d.id) FILTER (WHERE d.status = 'won') AS won_count, "
            "count(d.id) FILTER (WHERE d.status = 'lost') AS lost_count, "
            "coalesce(sum(d.value), 0) AS total_value, "
            "coalesce(sum(d.value) FILTER (WHERE d.status = 'active'), 0) AS active_value, "
            "coalesce(sum(d.value) FILTER (WHERE d.status = 'won'), 0) AS won_value, "
            "coalesce(sum(d.value * s.default_probability / 100.0) "
            "FILTER (WHERE d.status = 'active'), 0) AS weighted_value "
            "FROM deal_stages s LEFT JOIN deals d ON d.stage_id = s.id "
            "AND ($1::uuid IS NULL OR d.owner_id = $1) "
            "GROUP BY s.id ORDER BY s.order_position"
        )
        return await self._cached(sql, [owner_id], deal_read_tags(owner_id))  # type: ignore[no-any-return]

    # deal writes

    async def insert_deal(
        self, fields: Mapping[str, Any], *, idempotency_key: str | None
    ) -> tuple[Row, bool]:
        """Insert a deal; return (deal view, created).

        With an ``idempotency_key``, a second insert with the same key and the same fields
        writes nothing and returns the first deal with ``created=False`` (exactly-once
        fallback). The same key with other fields raises
        :class:`IdempotencyKeyReusedError`; a key of another owner's deal ConflictError.
        """
        columns = [c for c in CREATE_COLUMNS if fields.get(c) is not None]
        params = [to_db_value(c, fields[c]) for c in columns]
        fingerprint = request_fingerprint(fields) if idempotency_key is not None else None
        columns += ["idempotency_key", "idempotency_fingerprint"]
        params += [idempotency_key, fingerprint]
        placeholders = ", ".join(f"${i}" for i in range(1, len(params) + 1))
        sql = (
            f"WITH w AS (INSERT INTO deals ({', '.join(columns)}) VALUES ({placeholders}) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING *) "
            + _DEAL_VIEW_SELECT
            + "FROM w d "
            + _DEAL_VIEW_JOINS
        )
        row = await self._fetchrow(sql, *params)
        created = row is not None
        if row is None:
            assert idempotency_key is not None  # only a key can conflict
            found = await self.find_by_idempotency_key(idempotency_key)
            if found is None:  # pragma: no cover - the conflicting row vanished meanwhile
                raise ConflictError("the deal was deleted while it was being created")
            row = check_replay(found, fields)
        # Also when not created here: the row may have been written by another process
        # (the edge upstream) whose write this process's caches never saw.
        self.invalidate(deal_write_tags([row["owner_id"]], [row["id"]]))
        return row, created

    async def find_by_idempotency_key(self, idempotency_key: str) -> Row | None:
        """The deal created with ``idempotency_key`` (with its ``idempotency_fingerprint``),
        or None."""
        return await self._fetchrow(
            _DEAL_VIEW_SELECT
            + ", d.idempotency_fingerprint FROM deals d "
            + _DEAL_VIEW_JOINS
            + "WHERE d.idempotency_key = $1",
            idempotency_key,
        )

    async def update_deal(
        self,
        deal_id: uuid.UUID,
        fields: Mapping[str, Any],
        *,
        visible_to: uuid.UUID | None,
        expected_version: int | None,
        user_id: uuid.UUID,
    ) -> Row | None:
        """Update allow-listed fields of a visible deal; None if not visible/not found.

        A stage change also sets ``stage_changed_at`` and records the stage history, in
        the same transaction. Raises ConflictError when ``expected_version`` is stale.
        """
        columns = [c for c in UPDATE_COLUMNS if c in fields]
        async with translated_errors(), self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(
                "SELECT owner_id, stage_id, version FROM deals "
                "WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2) FOR UPDATE",
                deal_id,
                visible_to,
            )
            if current is None:
                return None
            if expected_version is not None and current["version"] != expected_version:
                raise ConflictError(
                    f"deal was changed by someone else (version {current['version']}, "
                    f"you sent {expected_version}): reload it and retry"
                )
            stage_changed = "stage_id" in fields and fields["stage_id"] != current["stage_id"]
            params: list[Any] = [deal_id]
            sets = []
            for column in columns:
                params.append(to_db_value(column, fields[column]))
                sets.append(f"{column} = ${len(params)}")
            sets += ["version = version + 1", "updated_at = now()"]
            if stage_changed:
                sets.append("stage_changed_at = now()")
                await _record_stage_change(conn, deal_id, fields["stage_id"], user_id)
            row = await conn.fetchrow(
                f"WITH w AS (UPDATE deals SET {', '.join(sets)} WHERE id = $1 RETURNING *) "
                + _DEAL_VIEW_SELECT
                + "FROM w d "
                + _DEAL_VIEW_JOINS,
                *params,
            )
        self.invalidate(deal_write_tags([current["owner_id"]], [deal_id]))
        return _row(row)

    async def delete_deal(self, deal_id: uuid.UUID, *, visible_to: uuid.UUID | None) -> bool:
        """Delete a visible deal; True if one was deleted."""
        row = await self._fetchrow(
            "DELETE FROM deals WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2) "
            "RETURNING owner_id",
            deal_id,
            visible_to,
        )
        if row is None:
            return False
        self.invalidate(deal_write_tags([row["owner_id"]], [deal_id]))
        return True

    async def bulk(
        self,
        operation: str,
        deal_ids: Sequence[uuid.UUID],
        *,
        visible_to: uuid.UUID | None,
        stage_id: uuid.UUID | None,
        user_id: uuid.UUID,
    ) -> list[uuid.UUID] | None:
        """Apply ``operation`` to every deal in one transaction, all or nothing.

        Returns the affected ids, or None (and changes nothing) when any id is not a deal
        the caller may see.
        """
        ids = list(dict.fromkeys(deal_ids))
        async with translated_errors(), self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, owner_id, stage_id FROM deals WHERE id = ANY($1::uuid[]) "
                "AND ($2::uuid IS NULL OR owner_id = $2) ORDER BY id FOR UPDATE",
                ids,
                visible_to,
            )
            if len(rows) != len(ids):
                return None
            if operation == "delete":
                await conn.execute("DELETE FROM deals WHERE id = ANY($1::uuid[])", ids)
            else:
                assert stage_id is not None  # the service checks update_stage has a stage
                moving = [r["id"] for r in rows if r["stage_id"] != stage_id]
                for deal_id in moving:
                    await _record_stage_change(conn, deal_id, stage_id, user_id)
                await conn.execute(
                    "UPDATE deals SET stage_id = $2, version = version + 1, updated_at = now(), "
                    "stage_changed_at = CASE WHEN stage_id = $2 THEN stage_changed_at "
                    "ELSE now() END WHERE id = ANY($1::uuid[])",
                    ids,
                    stage_id,
                )
        self.invalidate(deal_write_tags([r["owner_id"] for r in rows], ids))
        return ids


async def _record_stage_change(
    conn: asyncpg.Connection, deal_id: uuid.UUID, stage_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """Close the deal's open history row and open one for the new stage."""
    await conn.execute(
        "UPDATE deal_stage_history SET exited_at = now(), "
        "duration_seconds = extract(epoch FROM now() - entered_at)::int "
        "WHERE deal_id = $1 AND exited_at IS NULL",
        deal_id,
    )
    await conn.execute(
        "INSERT INTO deal_stage_history (deal_id, stage_id, user_id) VALUES ($1, $2, $3)",
        deal_id,
        stage_id,
        user_id,
    )


def _filters(query: ListQuery) -> tuple[list[str], list[Any]]:
    """WHERE fragments (fixed SQL text) and their bound parameters for a list query."""
    where: list[str] = []
    params: list[Any] = []

    def add(fragment: str, value: Any) -> None:
        params.append(value)
        where.append(fragment.format(n=len(params)))

    owner = query.visible_to or query.owner_id
    if owner is not None:
        add("d.owner_id = ${n}", owner)
    if query.stage_id is not None:
        add("d.stage_id = ${n}", query.stage_id)
    if query.status is not None:
        add("d.status = ${n}", query.status)
    if query.search:
        escaped = query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        add("(d.name ILIKE ${n} OR d.company ILIKE ${n})", f"%{escaped}%")
    return where, params


def request_fingerprint(fields: Mapping[str, Any]) -> str:
    """A digest of the create fields as they are stored: equal fields, equal digest."""
    canonical = {c: str(to_db_value(c, v)) for c, v in fields.items() if v is not None}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def check_replay(found: Row, fields: Mapping[str, Any]) -> Row:
    """The first deal made with a key, if ``fields`` repeat that create; raise otherwise.

    ``found`` is a row of :meth:`Repository.find_by_idempotency_key`; the fingerprint is
    removed from the returned row.
    """
    row = {k: v for k, v in found.items() if k != "idempotency_fingerprint"}
    if str(row["owner_id"]) != str(fields.get("owner_id")):
        # A key names one deal of one owner; never hand back somebody else's.
        raise ConflictError("this Idempotency-Key was already used for another deal")
    if found["idempotency_fingerprint"] != request_fingerprint(fields):
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was already used with a different request body: "
            "send a new key for a new deal, or repeat the first body exactly"
        )
    return row
