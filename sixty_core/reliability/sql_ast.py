"""The syntax side of the SQL scanner (:mod:`sixty_core.reliability.sql_scan`).

:class:`_Module` is one parsed file with its parent links, its calls by name and the
mutations of its names; :class:`_Binding` records how a name gets a value. The helpers read
assignment targets, a function's own body and what a call passes for a parameter. Nothing
here follows a name: that is :mod:`sixty_core.reliability.sql_flow`'s job.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

_MUTATORS = frozenset(("append", "extend", "insert", "add", "update"))
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_Function = ast.FunctionDef | ast.AsyncFunctionDef
_Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.Module


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
