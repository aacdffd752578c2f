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
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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

_STR_METHODS = frozenset(("join", "format", "strip", "lstrip", "rstrip", "lower", "upper",
                          "split", "rsplit", "replace", "removeprefix",
                          "removesuffix"))  # fmt: skip
_NUMBERS = frozenset(("len", "range", "int", "float", "bool", "abs", "round"))
_PURE = frozenset(("str", "list", "tuple", "set", "frozenset", "sorted", "reversed",
                   "enumerate", "zip", "dict", "min", "max"))  # fmt: skip
_MUTATORS = frozenset(("append", "extend", "insert", "add", "update"))
_KINDS = (
    "unsafe",
    "trusted",
    "wrapper",
    "composed",
    "constant",
    "literal",
)  # the worst argument wins
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_Function = ast.FunctionDef | ast.AsyncFunctionDef
_Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.Module
_Env = dict[str, str | None]  # comprehension variables -> reason (None: safe)


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


@dataclass(frozen=True)
class _Binding:
    """How a name gets a value. ``kind``: value, item (``index`` of an unpacked tuple),
    param, def (function or class), import, or opaque (``with ... as``, ``except``)."""

    kind: str
    node: ast.AST
    scope: _Scope
    index: int = 0


class _Module:
    """One parsed file: parent links, calls by name, and mutations of names."""

    def __init__(self, name: str, path: str, text: str) -> None:
        self.name, self.path, self.tree = name, path, ast.parse(text, filename=path)
        self.parents: dict[ast.AST, ast.AST] = {}
        self.calls: dict[str, list[ast.Call]] = {}
        self.mutations: list[tuple[str, ast.expr, ast.AST]] = []  # (name, value, statement)
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                self.calls.setdefault(called, []).append(node)
                owner = func.value if isinstance(func, ast.Attribute) else None
                if called in _MUTATORS and node.args and isinstance(owner, ast.Name):
                    self.mutations.append((owner.id, node.args[-1], node))
            elif isinstance(node, ast.Assign | ast.AugAssign):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
                        self.mutations.append((target.value.id, node.value, node))

    def scope_of(self, node: ast.AST) -> _Scope:
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, (*_FUNCTIONS, ast.Lambda)):
            parent = self.parents.get(parent)
        return parent if isinstance(parent, (*_FUNCTIONS, ast.Lambda)) else self.tree

    def within(self, node: ast.AST, scope: _Scope) -> bool:
        current: ast.AST | None = node
        while current is not None and current is not scope:
            current = self.parents.get(current)
        return current is scope


def _targets(target: ast.expr) -> Iterator[tuple[ast.Name, int | None]]:
    """Names bound by an assignment target, with their position in a flat tuple."""
    if isinstance(target, ast.Name):
        yield target, None
    elif isinstance(target, ast.Tuple | ast.List):
        flat = all(isinstance(e, ast.Name) for e in target.elts)
        for i, elt in enumerate(target.elts):
            inner = elt.value if isinstance(elt, ast.Starred) else elt
            yield from ((name, i if flat else None) for name, _ in _targets(inner))


def _own_nodes(scope: _Scope) -> Iterator[ast.AST]:
    """Nodes of ``scope``'s body, not those of nested functions, classes or comprehensions."""
    stack: list[ast.AST] = [] if isinstance(scope, ast.Lambda) else list(reversed(scope.body))
    nested = (*_FUNCTIONS, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (*nested, ast.GeneratorExp)):
            stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _call_text(expr: ast.AST) -> str:
    return ast.unparse(expr)[:60]


class _Scanner:
    """The analysis of one package; a file is parsed once a name leads into it."""

    def __init__(self, sources: dict[str, tuple[str, str]]) -> None:
        self._sources = sources  # module name -> (path, text)
        self._parsed: dict[str, _Module] = {}
        self._calls: dict[str, list[tuple[_Module, ast.Call]]] = {}
        self._bindings: dict[int, dict[str, list[_Binding]]] = {}
        self._names: dict[tuple[int, str], str | None] = {}
        self._callers: dict[int, list[tuple[_Module, ast.Call]]] = {}
        self._builders: dict[str, str | None] = {}

    def module(self, name: str) -> _Module | None:
        if name not in self._parsed and name in self._sources:
            self._parsed[name] = _Module(name, *self._sources[name])
        return self._parsed.get(name)

    def calls_named(
        self, name: str, *, method: bool = True, within: set[str] | None = None
    ) -> list[tuple[_Module, ast.Call]]:
        """Calls ``x.name(...)`` (``method``) or ``name(...)`` in the package or in the
        modules ``within``; only files whose text holds such a call are parsed."""
        key = f"{name} {method} {sorted(within or ())}"
        if key not in self._calls:
            needle = f".{name}(" if method else f"{name}("
            kinds = ast.Attribute if method else (ast.Attribute, ast.Name)
            self._calls[key] = [
                (module, call)
                for module_name, (_, text) in self._sources.items()
                if needle in text and (within is None or module_name in within)
                if (module := self.module(module_name)) is not None
                for call in module.calls.get(name, [])
                if isinstance(call.func, kinds)
            ]
        return self._calls[key]

    # --- bindings and name resolution -------------------------------------------------

    def bindings(self, module: _Module, scope: _Scope) -> dict[str, list[_Binding]]:
        found = self._bindings.get(id(scope))
        if found is not None:
            return found
        found = self._bindings[id(scope)] = {}

        def bind(name: str, kind: str, node: ast.AST, index: int | None = None) -> None:
            found.setdefault(name, []).append(_Binding(kind, node, scope, index or 0))

        if not isinstance(scope, ast.Module):
            a = scope.args
            for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
                if arg is not None:
                    bind(arg.arg, "param", arg)
        for node in _own_nodes(scope):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    for name, i in _targets(target):
                        bind(name.id, "value" if i is None else "item", node.value, i)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr):
                if isinstance(node.target, ast.Name) and node.value is not None:
                    bind(node.target.id, "value", node.value)
            elif isinstance(node, ast.For | ast.AsyncFor):  # elements of a safe collection
                for name, _ in _targets(node.target):
                    bind(name.id, "value", node.iter)
            elif isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
                bind(node.name, "def", node)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    bind((alias.asname or alias.name).split(".")[0], "import", node)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                for name, _ in _targets(node.optional_vars):
                    bind(name.id, "opaque", node)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bind(node.name, "opaque", node)
            elif isinstance(node, ast.Global | ast.Nonlocal):
                for bound in node.names:
                    bind(bound, "opaque", node)
        # Mutations count wherever they happen, closures included (``where.append`` in a
        # nested helper); the mutating statement's own scope evaluates the value.
        for mutated, value, node in module.mutations:
            if mutated in found and module.within(node, scope):
                found[mutated].append(_Binding("value", value, module.scope_of(node)))
        return found

    def lookup(
        self, name: str, module: _Module, scope: _Scope
    ) -> tuple[_Module, list[_Binding]] | None:
        """The bindings ``name`` refers to from ``scope``, followed through imports."""
        current: _Scope | None = scope
        while current is not None:
            found = self.bindings(module, current).get(name)
            if found is not None:
                node = found[0].node
                if len(found) == 1 and isinstance(node, ast.ImportFrom) and not node.level:
                    other = self.module(node.module or "")
                    alias = next(a for a in node.names if (a.asname or a.name) == name)
                    target = self.bindings(other, other.tree).get(alias.name) if other else None
                    if other is not None and target is not None:
                        return other, target
                return module, found
            current = None if isinstance(current, ast.Module) else module.scope_of(current)
        return None

    def _module_of(self, expr: ast.expr, module: _Module, scope: _Scope) -> _Module | None:
        """The package module ``expr`` names through an import, if it does."""
        found = self.lookup(expr.id, module, scope) if isinstance(expr, ast.Name) else None
        node = found[1][0].node if found and len(found[1]) == 1 else None
        if isinstance(expr, ast.Name) and isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name).split(".")[0] == expr.id:
                    prefix = f"{node.module}." if isinstance(node, ast.ImportFrom) else ""
                    return self.module(prefix + alias.name)
        return None

    def _function_called(
        self, expr: ast.AST, module: _Module, scope: _Scope
    ) -> tuple[_Module, _Function] | None:
        """The package function ``expr`` calls (``f()`` or ``module.f()``), if any."""
        if not isinstance(expr, ast.Call):
            return None
        found: tuple[_Module, list[_Binding]] | None = None
        if isinstance(expr.func, ast.Name):
            found = self.lookup(expr.func.id, module, scope)
        elif isinstance(expr.func, ast.Attribute):
            other = self._module_of(expr.func.value, module, scope)
            binding = self.bindings(other, other.tree).get(expr.func.attr) if other else None
            found = (other, binding) if other and binding else None
        if found is None or len(found[1]) != 1 or not isinstance(found[1][0].node, _FUNCTIONS):
            return None
        return found[0], found[1][0].node

    # --- why an expression may hold a value (None: it cannot) --------------------------

    def reason(self, expr: ast.AST, module: _Module, scope: _Scope, env: _Env) -> str | None:
        if isinstance(expr, ast.Constant):
            return None
        if isinstance(expr, ast.Tuple | ast.List | ast.Set):
            return self._first(expr.elts, module, scope, env)
        if isinstance(expr, ast.JoinedStr | ast.BoolOp):
            return self._first(expr.values, module, scope, env)
        if isinstance(expr, ast.IfExp):
            return self._first([expr.body, expr.orelse], module, scope, env)
        if isinstance(expr, ast.Dict):
            return self._first([*filter(None, expr.keys), *expr.values], module, scope, env)
        if isinstance(expr, ast.Await | ast.Starred | ast.Subscript):
            return self.reason(expr.value, module, scope, env)  # an item of a safe collection
        if isinstance(expr, ast.FormattedValue):
            inner = self.reason(expr.value, module, scope, env)
            return inner and f"the f-string interpolates a value: {inner}"
        if isinstance(expr, ast.BinOp):
            inner = self._first([expr.left, expr.right], module, scope, env)
            return inner and (f"`%` formats a value: {inner}" if _is_mod(expr) else inner)
        if isinstance(expr, ast.ListComp | ast.SetComp | ast.GeneratorExp):
            inner_env = dict(env)
            for comp in expr.generators:
                source = self.reason(comp.iter, module, scope, inner_env)
                inner_env.update((name.id, source) for name, _ in _targets(comp.target))
            return self.reason(expr.elt, module, scope, inner_env)
        if isinstance(expr, ast.Name):
            return env[expr.id] if expr.id in env else self._name(expr.id, module, scope)
        if isinstance(expr, ast.Attribute):
            return self._attribute(expr, module, scope)
        if isinstance(expr, ast.Call):
            return self._call(expr, module, scope, env)
        return f"`{_call_text(expr)}` is not built from constants"

    def _first(
        self, parts: Iterable[ast.AST], module: _Module, scope: _Scope, env: _Env
    ) -> str | None:
        return next(filter(None, (self.reason(p, module, scope, env) for p in parts)), None)

    def _name(self, name: str, module: _Module, scope: _Scope) -> str | None:
        found = self.lookup(name, module, scope)
        if found is None:
            return f"`{name}` is not a constant"
        home, bindings = found
        key = (id(bindings), name)
        if key not in self._names:
            self._names[key] = None  # optimistic inside a cycle of bindings
            inner = next(filter(None, (self._binding(name, b, home) for b in bindings)), None)
            self._names[key] = inner and f"`{name}` <- {inner}"
        return self._names[key]

    def _binding(self, name: str, binding: _Binding, module: _Module) -> str | None:
        node, scope = binding.node, binding.scope
        if binding.kind == "value":
            return self.reason(node, module, scope, {})
        if binding.kind == "item":
            return self._item(node, binding.index, module, scope)
        if binding.kind == "param" and isinstance(scope, _FUNCTIONS):
            return self._param(name, scope, module)
        return f"`{name}` is bound by {type(node).__name__}, not to a constant"

    def _item(self, expr: ast.AST, index: int | None, module: _Module, scope: _Scope) -> str | None:
        """Why element ``index`` of ``expr`` (all of it when None) may hold a value."""
        if isinstance(expr, ast.Await):
            return self._item(expr.value, index, module, scope)
        if isinstance(expr, ast.Tuple) and index is not None and index < len(expr.elts):
            return self.reason(expr.elts[index], module, scope, {})
        target = self._function_called(expr, module, scope)
        if target is None:
            return self.reason(expr, module, scope, {})
        home, fn = target
        for node in _own_nodes(fn):
            if isinstance(node, ast.Return) and node.value is not None:
                inner = self._item(node.value, index, home, fn)
                if inner is not None:
                    return f"`{fn.name}()` returns {inner}"
        return None

    def _attribute(self, expr: ast.Attribute, module: _Module, scope: _Scope) -> str | None:
        other = self._module_of(expr.value, module, scope)
        if other is not None:
            return self._name(expr.attr, other, other.tree)
        if isinstance(expr.value, ast.Name) and expr.attr == "__struct_fields__":
            found = self.lookup(expr.value.id, module, scope)
            if found is not None and isinstance(found[1][0].node, ast.ClassDef):
                return None  # field names: identifiers written in the class's source
        return f"`{_call_text(expr)}` is an attribute, not a constant"

    def _call(self, call: ast.Call, module: _Module, scope: _Scope, env: _Env) -> str | None:
        func, args = call.func, [*call.args, *(k.value for k in call.keywords)]
        if isinstance(func, ast.Attribute) and func.attr in _STR_METHODS:
            inner = self._first([func.value, *args], module, scope, env)
            return inner and (
                f"`.format` with a value: {inner}" if func.attr == "format" else inner
            )
        if isinstance(func, ast.Name) and self.lookup(func.id, module, scope) is None:
            if func.id in _NUMBERS:
                return None
            if func.id in _PURE:
                return self._first(args, module, scope, env)
        builder = self._builder_called(func, module, scope)
        if builder is not None:
            return self.builder_problem(builder)
        if self._function_called(call, module, scope) is not None:
            return self._item(call, None, module, scope)
        return f"`{_call_text(call)}` is a call the scanner cannot see through"

    # --- parameters: every caller must pass a safe argument ---------------------------

    def _param(self, name: str, fn: _Function, module: _Module) -> str | None:
        for node in fn.body:  # a top-level ``check(name)`` statement guards the parameter
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and [ast.unparse(a) for a in call.args] == [name]:
                builder = self._builder_called(call.func, module, fn)
                if builder is not None:
                    return self.builder_problem(builder)
        callers = self.callers(fn, module)
        if not callers:
            return f"parameter `{name}` of `{fn.name}()`, which nothing in the package calls"
        for home, call in callers:
            arg = _argument(call, fn, name)
            inner = arg and self.reason(arg, home, home.scope_of(call), {})
            if arg is not None and inner is not None:
                where = f"{home.path}:{call.lineno}"
                return f"`{fn.name}()` gets `{_call_text(arg)}` at {where}: {inner}"
        return None

    def callers(self, fn: _Function, module: _Module) -> list[tuple[_Module, ast.Call]]:
        """Calls of ``fn``: of a method, every ``x.name(...)`` but a module's function; of
        a function, the calls that resolve to it (a nested one only in its own module)."""
        if id(fn) in self._callers:
            return self._callers[id(fn)]
        method = isinstance(module.parents.get(fn), ast.ClassDef)
        within = None
        if not method:
            nested = not isinstance(module.scope_of(fn), ast.Module)
            last = module.name.rpartition(".")[2]
            within = {
                name
                for name, (_, text) in self._sources.items()
                if name == module.name or (not nested and last in text)
            }
        found = []
        for home, call in self.calls_named(fn.name, method=method, within=within):
            scope = home.scope_of(call)
            if method and isinstance(call.func, ast.Attribute):
                if self._module_of(call.func.value, home, scope) is None:
                    found.append((home, call))
            elif (target := self._function_called(call, home, scope)) and target[1] is fn:
                found.append((home, call))
        self._callers[id(fn)] = found
        return found

    # --- identifier builders ----------------------------------------------------------

    def _builder_called(self, func: ast.expr, module: _Module, scope: _Scope) -> str | None:
        found = self.lookup(func.id, module, scope) if isinstance(func, ast.Name) else None
        node = found[1][0].node if found else None
        if found and isinstance(node, _FUNCTIONS):
            qualified = f"{found[0].name}.{node.name}"
            return qualified if qualified in IDENTIFIER_BUILDERS else None
        return None

    def builder_problem(self, qualified: str) -> str | None:
        """None if the identifier builder ``qualified`` is verified, else what is wrong."""
        if qualified not in self._builders:
            self._builders[qualified] = self._verify(qualified)
        return self._builders[qualified]

    def _verify(self, qualified: str) -> str | None:
        module_name, _, short = qualified.rpartition(".")
        module = self.module(module_name)
        found = self.bindings(module, module.tree).get(short) if module else None
        fn = found[0].node if found else None
        if module is None or not isinstance(fn, _FUNCTIONS) or not fn.args.args:
            return f"identifier builder `{qualified}` is not a function of the package"
        param = fn.args.args[0].arg
        returns = [n for n in _own_nodes(fn) if isinstance(n, ast.Return)]
        if not returns or any(not _is_name(r.value, param) for r in returns):
            return f"identifier builder `{short}` does not return its argument unchanged"
        for node in _own_nodes(fn):
            if isinstance(node, ast.If) and any(isinstance(s, ast.Raise) for s in node.body):
                verdict = self._check_verdict(node.test, param, module, fn)
                if verdict is not None:
                    return verdict and f"identifier builder `{short}` {verdict}"
        return f"identifier builder `{short}` does not refuse names outside an allow-list"

    def _check_verdict(
        self, test: ast.expr, param: str, module: _Module, fn: _Function
    ) -> str | None:
        """'' for a sound allow-list test, a complaint for an unsound one, None if none."""
        if isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.NotIn):
            if not _is_name(test.left, param) or len(test.comparators) != 1:
                return None
            inner = self.reason(test.comparators[0], module, fn, {})
            return "" if inner is None else f"tests membership in a non-constant: {inner}"
        call = test.operand if isinstance(test, ast.UnaryOp) else None
        if not (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)):
            return None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            return None
        method, owner = call.func.attr, call.func.value
        if method not in ("match", "fullmatch") or len(call.args) != 1:
            return None
        if not _is_name(call.args[0], param) or not isinstance(owner, ast.Name):
            return None
        found = self.lookup(owner.id, module, fn)
        value = found[1][0].node if found and len(found[1]) == 1 else None
        source = value.args[0] if isinstance(value, ast.Call) and value.args else None
        if not (isinstance(source, ast.Constant) and isinstance(source.value, str)):
            return "matches a pattern that is not a literal module-level re.compile"
        pattern = re.compile(source.value)
        for probe in HOSTILE_IDENTIFIERS:
            if getattr(pattern, method)(probe) is not None:
                return f"accepts {probe!r} (pattern {source.value!r} with .{method})"
        return ""


def _is_name(expr: ast.AST | None, name: str) -> bool:
    return isinstance(expr, ast.Name) and expr.id == name


def _is_mod(expr: ast.BinOp) -> bool:
    return isinstance(expr.op, ast.Mod)


def _position(call: ast.Call, fn: _Function, name: str) -> int | None:
    """Where ``call`` passes ``fn``'s parameter ``name`` positionally (None: keyword only)."""
    params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
    if name not in params:
        return None
    bound = isinstance(call.func, ast.Attribute) and params[0] in ("self", "cls")
    return params.index(name) - bound


def _argument(call: ast.Call, fn: _Function, name: str) -> ast.expr | None:
    """What ``call`` passes for ``fn``'s parameter ``name`` (None if it takes the default;
    a ``*args`` before it stands for it, so the SQL in it counts as unprovable)."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    position = _position(call, fn, name)
    for i, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred) or i == position:
            return arg
    return None


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
    scanner = _Scanner(_sources(package_dir))
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
