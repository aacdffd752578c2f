"""Specification of sixty_core.reliability.sql_scan and of guarantee 13 (RELIABILITY I8, I9).

No SQL is built from values: the scanner follows every SQL argument in the package back to
constants and allow-lists, and is shown to catch planted injections before its verdict on
the package is trusted. Over HTTP, arbitrary text in the deal list's identifier-like
parameters gets a 400 unless allow-listed, and leaves the database as it was.
"""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sixty_core
from sixty_core.api.params import STATUSES
from sixty_core.db.provision import connect
from sixty_core.listing import SORT_FIELDS, SORT_ORDERS
from sixty_core.reliability.sql_scan import SQL_METHODS, scan
from tests.api_support import Api, api_fixture

PACKAGE = Path(sixty_core.__file__).resolve().parent

#: The package's SQL the scanner cannot prove free of values, each vouched for in
#: sql_scan.TRUSTED_FUNCTIONS, as (path, call, part of the reason): migrations run the
#: bundled .sql files; the bulk seed replays DDL that Postgres spelled with format('%I')
#: from its own catalog.
KNOWN_TRUSTED = [
    ("sixty_core/db/migrate.py", "conn.execute", "bundled .sql migration files"),
    ("sixty_core/db/seed_load.py", "conn.execute", "format('%I')"),
    ("sixty_core/db/seed_load.py", "conn.execute", "format('%I')"),
    ("sixty_core/db/seed_load.py", "conn.execute", "format('%I')"),
]


# --- the scanner on the package --------------------------------------------------------


def test_the_package_sends_sql_only_from_constants_and_allow_lists() -> None:
    """Every SQL call site of sixty_core is proven safe or vouched for (KNOWN_TRUSTED); a
    new f-string, ``%``, ``+`` or ``.format`` with a value anywhere makes this fail."""
    result = scan(PACKAGE)
    assert result.findings == [], "\n".join(map(str, result.findings))
    trusted = [(t.path, t.call) for t in result.trusted]
    assert trusted == [known[:2] for known in KNOWN_TRUSTED], "\n".join(map(str, result.trusted))
    for site, (*_, because) in zip(result.trusted, KNOWN_TRUSTED, strict=True):
        assert because in site.reason, site


def test_a_trusted_function_vouches_only_for_its_own_sites(tmp_path: Path) -> None:
    """A value-built SQL string in a function outside TRUSTED_FUNCTIONS is a finding, even
    beside a trusted one."""
    copy = tmp_path / "sixty_core"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    migrate = copy / "db" / "migrate.py"
    migrate.write_text(
        migrate.read_text()
        + "\n\nasync def drop(conn: object, name: str) -> None:\n"
        + '    await conn.execute(f"DROP TABLE {name}")  # type: ignore[attr-defined]\n'
    )
    result = scan(copy)
    assert [(f.path, f.call) for f in result.findings] == [
        ("sixty_core/db/migrate.py", "conn.execute")
    ]


def test_the_scan_reaches_the_repository_listing_through_its_wrappers() -> None:
    """The repository's reads go through ``_fetch``, ``_fetchrow`` and ``_cached``: their
    callers are the sites checked, none of them unsafe."""
    result = scan(PACKAGE)
    assert result.call_sites >= 60
    for wrapper in ("_fetch", "_fetchrow", "_cached"):
        assert result.wrappers[f"sixty_core.db.repository.{wrapper}"] >= 3
    cached = [s for s in result.sites if s.call == "self._cached"]
    assert len(cached) == result.wrappers["sixty_core.db.repository._cached"]
    assert {s.kind for s in cached} <= {"constant", "composed", "literal"}


@pytest.mark.parametrize(
    ("allow_listed", "from_request", "readers"),
    [
        (
            "column, cast = SORT_FIELDS[query.sort]",
            'column, cast = query.sort, "text"',
            ["list_deals_page"],
        ),
        (
            'direction = "DESC" if query.order == "desc" else "ASC"',
            "direction = query.order",
            ["list_deals_page"],
        ),
        (
            'add("d.status = ${n}", query.status)',
            "add(f\"d.status = '{query.status}'\", 1)",
            ["list_deals_unbounded", "list_deals_page"],
        ),
    ],
)
def test_the_listing_is_safe_only_while_it_uses_its_allow_lists(
    tmp_path: Path, allow_listed: str, from_request: str, readers: list[str]
) -> None:
    """In a copy of the package whose deal listing takes its ORDER BY column, direction or
    a WHERE fragment from the request instead of an allow-list, the listing's read becomes
    a finding (the scanner follows the SQL through ``_filters`` and the ``_cached``
    wrapper), while the real listing is not one."""
    copy = tmp_path / "sixty_core"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    repository = copy / "db" / "repository.py"
    text = repository.read_text()
    assert text.count(allow_listed) == 1
    repository.write_text(text.replace(allow_listed, from_request))
    new = set(scan(copy).findings) - set(scan(PACKAGE).findings)
    expected = [(REPOSITORY, cached_read(text, reader), "self._cached") for reader in readers]
    assert sorted((f.path, f.line, f.call) for f in new) == expected, new


REPOSITORY = "sixty_core/db/repository.py"


def cached_read(text: str, function: str) -> int:
    """The line of the first ``self._cached(`` read in ``function`` of ``text``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if f"def {function}(" in line)
    return next(i for i in range(start, len(lines)) if "await self._cached(" in lines[i]) + 1


def test_the_scan_is_fast_and_deterministic() -> None:
    """Two scans give the same result; the faster takes well under a second."""
    results, seconds = [], []
    for _ in range(2):
        started = time.perf_counter()
        results.append(scan(PACKAGE))
        seconds.append(time.perf_counter() - started)
    assert results[0] == results[1]
    assert min(seconds) < 1.0, seconds


# --- the scanner on planted code -------------------------------------------------------

PLANTED = """
import re

from sixty_core.db.template import check_database_name

ALLOWED = {"name": "d.name", "value": "d.value"}
TABLES = ("deals", "companies")
SELECT = "SELECT id FROM deals"
SELECT_BY_ID = SELECT + " WHERE id = $1"
MUTABLE = {"name": "d.name"}


async def run(conn, sql, *args):
    return await conn.fetch(sql, *args)


async def bad(conn, request, deal_id, name):
    MUTABLE[request.key] = request.value
    await conn.execute(f"DELETE FROM deals WHERE name = '{name}'")  # BAD f-string
    await conn.execute("DELETE FROM deals WHERE id = %s" % deal_id)  # BAD %
    await conn.fetchrow("SELECT * FROM deals WHERE name = '" + name + "'")  # BAD +
    await conn.fetchval("SELECT {} FROM deals".format(request.column))  # BAD .format
    sql = "SELECT * FROM deals ORDER BY " + request.sort
    await conn.fetch(sql)  # BAD variable passed through
    await run(conn, f"SELECT {request.sort} FROM deals")  # BAD through a wrapper
    await conn.fetch(f"SELECT {MUTABLE['name']} FROM deals")  # BAD mutated allow-list
    await conn.copy_records_to_table(request.table, records=[])  # BAD table name
    await conn.execute(f"CREATE DATABASE {check_database_name(name)}")  # BAD weak builder


async def good(conn, request, deal_id):
    await conn.execute("DELETE FROM deals WHERE id = $1", deal_id)  # GOOD literal
    await conn.fetchrow(SELECT_BY_ID, deal_id)  # GOOD constant
    column = ALLOWED[request.sort]
    direction = "DESC" if request.desc else "ASC"
    await conn.fetch(f"{SELECT} ORDER BY {column} {direction}")  # GOOD allow-list lookup
    params = [deal_id, request.name]
    holes = ", ".join(f"${i}" for i in range(1, len(params) + 1))
    await conn.execute(f"INSERT INTO deals (id, name) VALUES ({holes})", *params)  # GOOD
    for table in TABLES:
        await conn.fetchval(f"SELECT count(*) FROM {table}")  # GOOD constant collection
    await run(conn, SELECT_BY_ID, deal_id)  # GOOD through a wrapper
"""

TEMPLATE_WEAK = """
import re

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_database_name(name):
    if not _NAME.match(name):
        raise ValueError(name)
    return name
"""


def plant(root: Path, source: str, template: str = TEMPLATE_WEAK) -> Path:
    """A package named like ours (so the identifier builder resolves) holding ``source``."""
    package = root / "sixty_core"
    (package / "db").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "db" / "__init__.py").write_text("")
    (package / "db" / "template.py").write_text(textwrap.dedent(template))
    (package / "planted.py").write_text(textwrap.dedent(source).lstrip("\n"))
    return package


def marked(source: str, mark: str) -> list[int]:
    lines = textwrap.dedent(source).lstrip("\n").splitlines()
    return [n for n, line in enumerate(lines, start=1) if f"# {mark}" in line]


def test_planted_injections_are_findings_at_their_lines(tmp_path: Path) -> None:
    """f-string, ``%``, ``+`` and ``.format`` with a value, a variable passed through, a
    wrapper's caller, a mutated allow-list, a table name from a request and a weak identifier
    builder are each a finding at their own line; the constant, allow-listed and ``$n``
    sites beside them are not."""
    result = scan(plant(tmp_path, PLANTED))
    lines = [f.line for f in result.findings if f.path == "sixty_core/planted.py"]
    assert lines == marked(PLANTED, "BAD"), "\n".join(map(str, result.findings))
    assert len(marked(PLANTED, "BAD")) == 9
    reasons = {f.line: f.reason for f in result.findings}
    bad = dict(zip(["f", "%", "+", "format"], marked(PLANTED, "BAD"), strict=False))
    assert "the f-string interpolates a value" in reasons[bad["f"]]
    assert "`%` formats a value" in reasons[bad["%"]]
    assert "`.format` with a value" in reasons[bad["format"]]
    assert "accepts 'a\\n'" in reasons[max(reasons)]
    good = set(marked(PLANTED, "GOOD"))
    sites = {s.line: s.kind for s in result.sites if s.path == "sixty_core/planted.py"}
    assert {line: sites.get(line) for line in good} == {
        line: sites[line] for line in good if sites.get(line) in ("literal", "constant", "composed")
    }
    assert good <= set(sites)


def test_a_sound_identifier_builder_is_trusted(tmp_path: Path) -> None:
    """With ``fullmatch`` the same builder refuses every hostile probe, so the database name
    it returns is an allow-listed identifier: the weak-builder line is no longer a finding."""
    sound = TEMPLATE_WEAK.replace("_NAME.match(name)", "_NAME.fullmatch(name)")
    result = scan(plant(tmp_path, PLANTED, sound))
    lines = [f.line for f in result.findings if f.path == "sixty_core/planted.py"]
    assert lines == marked(PLANTED, "BAD")[:-1]


def test_every_asyncpg_query_method_is_a_call_site(tmp_path: Path) -> None:
    """Each method in SQL_METHODS is recognised: an f-string with a value in any of them
    is a finding."""
    calls = "\n".join(
        f"    await conn.{method}(f'SELECT {{value}}')" for method in sorted(SQL_METHODS)
    )
    source = f"async def send(conn, value):\n{calls}\n"
    result = scan(plant(tmp_path, source))
    assert sorted(f.call for f in result.findings) == [f"conn.{m}" for m in sorted(SQL_METHODS)]


# --- over HTTP: hostile list parameters --------------------------------------------------

sql_api = api_fixture("sql_api", ["optimized", "legacy"])

#: The deal list's identifier-like parameters and the values each accepts ("" = default).
ALLOW_LISTS: dict[str, tuple[str, ...]] = {
    "sort": (*SORT_FIELDS, ""),
    "order": (*SORT_ORDERS, ""),
    "status": (*STATUSES, ""),
}
FRAGMENTS = [
    "name; DROP TABLE deals --",
    "'; DELETE FROM deals; --",
    "value DESC, (SELECT pg_sleep(1))",
    "d.name",
    "name'",
    'name"',
    "name\x00",
    "\x00",
    "1=1) OR (1=1",
    "created_at,id",
    "value::text",
    "NAME",
    " asc",
    "desc --",
    "\uff4e\uff41\uff4d\uff45",  # full-width "name"
    "wön",
    "%27",
    "$1",
    "active' OR 'a'='a",
]
PROPERTY_EXAMPLES = 150


def hostile_text() -> st.SearchStrategy[str]:
    """Arbitrary text (NUL and any non-surrogate code point), SQL fragments, allowed values,
    and allowed values with a fragment glued on."""
    allowed = sorted({v for values in ALLOW_LISTS.values() for v in values})
    return st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=40),
        st.sampled_from([*FRAGMENTS, *allowed]),
        st.builds(str.__add__, st.sampled_from(allowed), st.sampled_from(FRAGMENTS)),
    )


async def deals_state(dsn: str) -> tuple[object, ...]:
    """Row count and a digest of every deal's id and version, plus the public tables."""
    conn = await connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, md5(string_agg(id::text || ':' || version, ',' ORDER BY id)),"
            " (SELECT count(*) FROM pg_tables WHERE schemaname = 'public') FROM deals"
        )
    finally:
        await conn.close()
    assert row is not None
    return tuple(row)


def probe_list_parameters(api: Api, statuses: Counter[int], stop: threading.Event) -> None:
    headers = api.auth(api.user(1))
    base = str(api.http.base_url).rstrip("/")
    with httpx.Client(base_url=base, timeout=30, trust_env=False) as client:

        @settings(
            max_examples=PROPERTY_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(
            query=st.dictionaries(
                st.sampled_from(sorted(ALLOW_LISTS)), hostile_text(), min_size=1, max_size=3
            )
        )
        def run(query: dict[str, str]) -> None:
            if stop.is_set():
                raise TimeoutError("the property run was given up")
            response = client.get("/api/deals", params={**query, "limit": 1}, headers=headers)
            statuses[response.status_code] += 1
            allowed = all(value in ALLOW_LISTS[name] for name, value in query.items())
            assert response.status_code == (200 if allowed else 400), (query, response.text)
            if not allowed:
                assert response.json()["error"]["code"] == "validation_error"

        run()


async def test_hostile_list_parameters_get_400_and_change_nothing(sql_api: Api) -> None:
    """Arbitrary text as ``sort``, ``order`` and ``status`` (alone or together) on the deal
    list: 200 only when every value is allow-listed, else 400, never a 5xx; afterwards the
    deals (count, ids, versions) and the tables are exactly as before."""
    before = await deals_state(sql_api.dsn)
    statuses: Counter[int] = Counter()
    stop = threading.Event()
    try:
        async with asyncio.timeout(60):
            await asyncio.to_thread(probe_list_parameters, sql_api, statuses, stop)
    finally:
        stop.set()
    assert set(statuses) == {200, 400}, statuses
    assert sum(statuses.values()) >= PROPERTY_EXAMPLES
    assert await deals_state(sql_api.dsn) == before
