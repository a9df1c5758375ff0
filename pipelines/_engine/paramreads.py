"""Which parameter fields a stage reads, found by reading its code.

A stage's fingerprint covers the parameters it may read, so that changing them recomputes
it. Covering the whole model recomputes a stage that reads ``params.folder`` when an
unrelated field changes; covering only the fields it reads needs to know them. They are
found in the source: every ``params.NAME`` in the stage function, and in the user-code
functions it passes ``params`` to (``folder_of(params)``), followed by name like the code
fingerprint follows helpers.

Where the code does something this cannot follow (passes ``params`` to a function it cannot
see, to ``getattr``, stores it, returns it), the answer is "the whole model", with the reason,
which ``show`` prints: a wrong "it does not read that field" would reuse stale results, a
wrong "it reads everything" only recomputes.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types
from dataclasses import dataclass
from typing import Any

PARAMS = "params"


@dataclass(frozen=True, slots=True)
class Reads:
    """The params fields a function reads: ``fields``, or all of them (``fields is None``, ``why`` says why)."""

    fields: frozenset[str] | None
    why: str = ""

    def within(self, model_fields: Any) -> Reads:
        """The same, checked against the model's fields: reading anything else (a method) reads all."""
        if self.fields is None:
            return self
        extra = sorted(self.fields - set(model_fields))
        if extra:
            return Reads(None, f"reads params.{extra[0]}, which is not a field")
        return self


def reads(fn: Any, name: str = PARAMS) -> Reads:
    """The params fields ``fn`` reads through its argument ``name``, and through the helpers it passes it to."""
    return _reads(fn, name, frozenset())


def _reads(fn: Any, name: str, seen: frozenset[Any]) -> Reads:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.ismethod(fn):
        fn = fn.__func__
    if not inspect.isfunction(fn):
        return Reads(None, f"params goes to {_label(fn)}, whose code cannot be read")
    key = (fn.__code__, name)
    if key in seen:
        return Reads(frozenset())
    node = _syntax(fn)
    if node is None:
        return Reads(None, f"the source of {fn.__qualname__}() cannot be read")
    found: set[str] = set()
    for use, parent in _uses(node, name):
        if isinstance(parent, ast.Attribute) and parent.value is use and isinstance(parent.ctx, ast.Load):
            found.add(parent.attr)
            continue
        if isinstance(parent, ast.Call) and parent.func is not use:
            inner = _passed_to(fn, parent, use, seen | {key})
            if inner.fields is None:
                return inner
            found |= inner.fields
            continue
        line = fn.__code__.co_firstlineno + use.lineno - 1
        return Reads(None, f"{fn.__qualname__}() uses params whole (line {line})")
    return Reads(frozenset(found))


def _passed_to(fn: types.FunctionType, call: ast.Call, use: ast.Name, seen: frozenset[Any]) -> Reads:
    """``helper(params)``: what ``helper`` reads through the parameter that receives it."""
    callee = _resolve(fn, call.func)
    where = ast.unparse(call.func)
    if callee is None or not inspect.isfunction(callee):
        return Reads(None, f"params goes to {where}(), which cannot be followed")
    try:
        signature = inspect.signature(callee)
    except (TypeError, ValueError):
        return Reads(None, f"params goes to {where}(), whose signature cannot be read")
    positional = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if use in call.args:
        at = call.args.index(use)
        if any(isinstance(a, ast.Starred) for a in call.args[: at + 1]) or at >= len(positional):
            return Reads(None, f"params goes to {where}() through *args")
        return _reads(callee, positional[at].name, seen)
    for keyword in call.keywords:
        if keyword.value is use and keyword.arg is not None and keyword.arg in signature.parameters:
            return _reads(callee, keyword.arg, seen)
    return Reads(None, f"params goes to {where}() through **kwargs")


def _resolve(fn: types.FunctionType, expr: ast.expr) -> Any:
    """The object a call's function expression names: a global, a closure variable, ``module.attr``."""
    if isinstance(expr, ast.Name):
        if fn.__closure__ and expr.id in fn.__code__.co_freevars:
            try:
                return fn.__closure__[fn.__code__.co_freevars.index(expr.id)].cell_contents
            except ValueError:
                return None
        return fn.__globals__.get(expr.id)
    if isinstance(expr, ast.Attribute):
        owner = _resolve(fn, expr.value)
        if isinstance(owner, types.ModuleType):
            return getattr(owner, expr.attr, None)
    return None


def _uses(node: ast.AST, name: str) -> list[tuple[ast.Name, ast.AST]]:
    """Every use of ``name`` in ``node``'s body, with its parent, skipping nested functions
    that bind the same name to something else."""
    out: list[tuple[ast.Name, ast.AST]] = []

    def visit(n: ast.AST, parent: ast.AST) -> None:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and name in {
            a.arg for a in _arguments(n.args)
        }:
            return
        if isinstance(n, ast.Name) and n.id == name:
            out.append((n, parent))
        for child in ast.iter_child_nodes(n):
            visit(child, n)

    body = node.body if isinstance(node.body, list) else [node.body]  # type: ignore[attr-defined]
    for statement in body:
        visit(statement, node)
    return out


def _arguments(args: ast.arguments) -> list[ast.arg]:
    extra = [a for a in (args.vararg, args.kwarg) if a is not None]
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *extra]


@functools.lru_cache(maxsize=512)
def _parsed(code: types.CodeType) -> ast.AST | None:
    try:
        lines, _ = inspect.getsourcelines(code)
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except SyntaxError:  # a lambda in the middle of an expression: its line is not a statement
        return None
    if code.co_name == "<lambda>":  # one lambda on its lines, or it is not known which
        lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
        return lambdas[0] if len(lambdas) == 1 else None
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == code.co_name:
            return n
    return None


def _syntax(fn: types.FunctionType) -> ast.AST | None:
    return _parsed(fn.__code__)


def _label(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__
