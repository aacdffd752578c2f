"""Find every SQL call site in the package and prove its SQL text carries no value (I8, I9).

Guarantee 13 (RELIABILITY.md): values are bound (``$n``), identifiers come from an
allow-list. A grep cannot tell ``f"ORDER BY {column}"`` with ``column`` looked up in a
constant mapping from the same text with ``column`` taken from a request, so this scanner
reads the source (``ast``: no import, no database) and follows the SQL argument of every
call site back to where its parts come from:

- a call site is a call of an asyncpg method in :data:`SQL_METHODS` (its query; for the COPY
  helpers the table, schema and column names and ``where``), or a call of a *wrapper*, a
  function passing its parameter straight on as the SQL (the repository's ``_fetch``):
  the wrapper's callers are then checked instead;
- a part is safe when it is a literal; a name bound only to safe parts (module constants and
  imports included); a concatenation, f-string, ``.join`` or ``.format`` of safe parts; an
  item of a safe collection (``SORT_FIELDS[query.sort]``: the lookup yields one of the
  constants or fails) or an element of one (``for table, _ in SEEDED_TABLES``); a number
  (``len(params)``); the field names of a package class (``__struct_fields__``); what a
  package function returns, when that is safe; a parameter every caller fills safely; or
  the result of a verified identifier builder (:data:`IDENTIFIER_BUILDERS`);
- anything else is a :class:`Finding`: a value, an attribute, a call the scanner cannot see
  through, or a parameter some caller fills with one of those.

An identifier builder is trusted only once verified: it returns its argument unchanged and
raises unless the argument is in a constant collection or matches a literal module-level
``re.compile`` pattern, which must refuse every probe in :data:`HOSTILE_IDENTIFIERS` with
the method the builder calls. Limits: methods are matched by name whatever the receiver
(a non-database ``.fetch()`` is checked too, which errs towards a finding); mutations count
for ``x.append(...)``-style calls and ``x[k] = ...`` on a name; a cycle of bindings is
assumed safe until another binding proves otherwise.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sixty_core.reliability.sql_ast import _FUNCTIONS, _call_text, _position
from sixty_core.reliability.sql_flow import _Scanner

_Spec = tuple[tuple[int | None, str], ...]  # (position, keyword) of each SQL argument
_QUERY: _Spec = ((0, "query"),)
_COPY: _Spec = ((0, "table_name"), (None, "schema_name"), (None, "columns"), (None, "where"))
#: asyncpg methods -> the arguments that are SQL text or identifiers.
SQL_METHODS: dict[str, _Spec] = {
    **dict.fromkeys(("execute", "fetch", "fetchrow", "fetchval", "fetchmany"), _QUERY),
    **dict.fromkeys(("prepare", "cursor", "copy_from_query"), _QUERY),
    "executemany": ((0, "command"),),
    **dict.fromkeys(("copy_from_table", "copy_to_table", "copy_records_to_table"), _COPY),
}
#: Functions trusted to return only allow-listed identifiers, once verified.
IDENTIFIER_BUILDERS = ("sixty_core.db.template.check_database_name",)
#: Functions whose SQL comes from outside Python source and is trusted for a stated reason:
#: their sites are reported as ``trusted`` with that reason, not as findings. Keep it short;
#: every entry is a place a reviewer must vouch for.
TRUSTED_FUNCTIONS: dict[tuple[str, str], str] = {
    ("sixty_core/db/migrate.py", "migrate"): "runs the package's own bundled .sql "
    "migration files, never text from a request",
    ("sixty_core/db/seed_load.py", "copy_in_bulk"): "replays DDL that Postgres spelled from "
    "its own catalog with format('%I') (quoted server-side)",
}
#: What an identifier allow-list must refuse: SQL metacharacters, whitespace, NUL, nothing.
HOSTILE_IDENTIFIERS = ("", "a b", "a;", "a'", 'a"', "a--", "a/*", "a(", "a)", "a,b", "a\n",
                       "a\x00", "a\\", "a$1")  # fmt: skip

_KINDS = (
    "unsafe",
    "trusted",
    "wrapper",
    "composed",
    "constant",
    "literal",
)  # the worst argument wins


@dataclass(frozen=True, order=True)
class Finding:
    """SQL at ``path:line`` (sent by ``call``) that cannot be proven free of values."""

    path: str
    line: int
    call: str
    reason: str


@dataclass(frozen=True, order=True)
class Site:
    """One place SQL is sent. ``kind``: literal, constant (a name bound to safe text),
    composed (built from safe parts), wrapper (its callers are sites), trusted (see
    :data:`TRUSTED_FUNCTIONS`) or unsafe."""

    path: str
    line: int
    call: str
    kind: str


@dataclass
class ScanResult:
    """Every call site, the findings among them, and each wrapper's callers (checked)."""

    call_sites: int
    findings: list[Finding]
    sites: list[Site] = field(default_factory=list)
    wrappers: dict[str, int] = field(default_factory=dict)
    #: Sites in :data:`TRUSTED_FUNCTIONS`: not provable, vouched for with a reason.
    trusted: list[Finding] = field(default_factory=list)

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for site in self.sites:
            counts[site.kind] = counts.get(site.kind, 0) + 1
        return dict(sorted(counts.items()))


def _sql_arguments(call: ast.Call, spec: _Spec) -> Iterator[ast.expr]:
    for position, keyword in spec:
        yield from (kw.value for kw in call.keywords if kw.arg == keyword)
        if position is not None and len(call.args) > position:
            yield call.args[position]


def _sources(package_dir: Path) -> dict[str, tuple[str, str]]:
    sources = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent)
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        sources[".".join(parts)] = (relative.as_posix(), path.read_text(encoding="utf-8"))
    return sources


def scan(package_dir: Path) -> ScanResult:
    """Every SQL call site under ``package_dir`` (a package directory), classified.

    Deterministic: sites and findings are sorted by path and line. Only files that hold a
    SQL method call or a name the analysis follows are parsed; ``SyntaxError`` if one of
    them does not parse.
    """
    scanner = _Scanner(
        _sources(package_dir), builders=IDENTIFIER_BUILDERS, probes=HOSTILE_IDENTIFIERS
    )
    work = [
        (m, c, spec) for name, spec in SQL_METHODS.items() for m, c in scanner.calls_named(name)
    ]
    sites: list[Site] = []
    findings: list[Finding] = []
    trusted: list[Finding] = []
    wrappers: dict[str, int] = {}
    seen: set[int] = set()
    while work:
        module, call, spec = work.pop()
        if id(call) in seen:
            continue
        seen.add(id(call))
        label, scope, kinds = _call_text(call.func), module.scope_of(call), []
        for arg in _sql_arguments(call, spec):
            found = scanner.lookup(arg.id, module, scope) if isinstance(arg, ast.Name) else None
            fn = found[1][0].scope if found and len(found[1]) == 1 else None
            if found and found[1][0].kind == "param" and isinstance(fn, _FUNCTIONS):
                # A parameter passed on untouched: a wrapper, whose callers are the sites.
                assert isinstance(arg, ast.Name)
                callers = scanner.callers(fn, found[0])
                wrappers[f"{found[0].name}.{fn.name}"] = len(callers)
                work += [(m, c, ((_position(c, fn, arg.id), arg.id),)) for m, c in callers]
                kinds.append("wrapper")
            elif (reason := scanner.reason(arg, module, scope, {})) is not None:
                text = f"`{_call_text(arg)}`: {reason}"
                vouched = TRUSTED_FUNCTIONS.get((module.path, getattr(scope, "name", "")))
                if vouched is not None:
                    trusted.append(Finding(module.path, call.lineno, label, f"{text}; {vouched}"))
                    kinds.append("trusted")
                else:
                    findings.append(Finding(module.path, call.lineno, label, text))
                    kinds.append("unsafe")
            elif isinstance(arg, ast.Constant):
                kinds.append("literal")
            else:
                kinds.append(
                    "constant" if isinstance(arg, ast.Name | ast.Attribute) else "composed"
                )
        sites.append(
            Site(module.path, call.lineno, label, min(kinds or ["literal"], key=_KINDS.index))
        )
    return ScanResult(
        len(sites),
        sorted(findings),
        sorted(sites),
        dict(sorted(wrappers.items())),
        sorted(trusted),
    )
