"""The binding and flow analysis behind :func:`sixty_core.reliability.sql_scan.scan`.

:class:`_Scanner` follows an expression back to where its parts come from: names through
their bindings (imports across the package included), parameters through every caller,
calls of package functions through their returns, identifier builders through a check of
their body. :meth:`_Scanner.reason` returns None when the expression cannot hold a value,
else why it may; the rules are listed in :mod:`sixty_core.reliability.sql_scan`'s docstring.
A file is parsed only once a name leads into it; ``SyntaxError`` if it does not parse.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from sixty_core.reliability.sql_ast import (
    _FUNCTIONS,
    _argument,
    _Binding,
    _call_text,
    _Function,
    _is_mod,
    _is_name,
    _Module,
    _own_nodes,
    _Scope,
    _targets,
)

_STR_METHODS = frozenset(("join", "format", "strip", "lstrip", "rstrip", "lower", "upper",
                          "split", "rsplit", "replace", "removeprefix",
                          "removesuffix"))  # fmt: skip
_NUMBERS = frozenset(("len", "range", "int", "float", "bool", "abs", "round"))
_PURE = frozenset(("str", "list", "tuple", "set", "frozenset", "sorted", "reversed",
                   "enumerate", "zip", "dict", "min", "max"))  # fmt: skip
_Env = dict[str, str | None]  # comprehension variables -> reason (None: safe)


class _Scanner:
    """The analysis of one package; a file is parsed once a name leads into it."""

    def __init__(
        self,
        sources: dict[str, tuple[str, str]],
        *,
        builders: tuple[str, ...],
        probes: tuple[str, ...],
    ) -> None:
        self._sources = sources  # module name -> (path, text)
        # sql_scan's IDENTIFIER_BUILDERS and HOSTILE_IDENTIFIERS, passed in at each scan.
        self._builder_names = builders
        self._probes = probes
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
            return qualified if qualified in self._builder_names else None
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
        for probe in self._probes:
            if getattr(pattern, method)(probe) is not None:
                return f"accepts {probe!r} (pattern {source.value!r} with .{method})"
        return ""
