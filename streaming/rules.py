"""Rules as data: a JsonLogic subset compiled once to Python callables, and translated to DuckDB SQL.

Generic rule engines cost 9-450 µs per evaluation here; a rule compiled to a closure costs ~1-3 µs
(STACK-FACTS.md). The same rule translates to a DuckDB boolean expression, so the warehouse can backtest it over
history and a parity test can check both engines agree.

Supported operators: ``var`` (a name in the event's facts, optional default), ``==`` ``!=`` ``<`` ``<=`` ``>``
``>=`` (two operands; ``<``/``<=`` also take three: ``a < b < c``), ``and`` ``or`` ``!`` ``!!``, ``in`` (substring
of a string, or membership in a literal list), ``+`` ``-`` ``*`` ``/``. Semantics are null-safe and identical in
both engines: a comparison involving a missing value is false (never an error), division by zero gives null.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from streaming.errors import FirstmileError

Facts = Mapping[str, Any]
Predicate = Callable[[Facts], bool]

COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
ARITHMETIC = {"+", "-", "*", "/"}
OPERATORS = COMPARISONS | ARITHMETIC | {"var", "and", "or", "!", "!!", "in"}


class RuleSyntaxError(FirstmileError, ValueError):
    """A rule uses an unknown operator or a malformed operand; the message names the path in the rule."""


def _is_literal(node: Any) -> bool:
    return node is None or isinstance(node, bool | int | float | str)


def _operator(node: Any, path: str) -> tuple[str, list[Any]]:
    if not isinstance(node, dict) or len(node) != 1:
        raise RuleSyntaxError(f"{path}: expected an object with exactly one operator, got {node!r}"[:200])
    (op, args), = node.items()
    if op not in OPERATORS:
        raise RuleSyntaxError(f"{path}: unknown operator {op!r} (supported: {sorted(OPERATORS)})")
    if not isinstance(args, list):
        args = [args]
    return op, args


def _cmp(op: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    try:
        if op == "==":
            return bool(a == b)
        if op == "!=":
            return bool(a != b)
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)
    except TypeError:
        return False


def compile_value(node: Any, path: str = "$") -> Callable[[Facts], Any]:
    """Compile an expression that yields a value (var, literal or arithmetic)."""
    if _is_literal(node):
        literal: Any = node
        return lambda facts: literal
    if isinstance(node, list):
        items = [compile_value(n, f"{path}[{i}]") for i, n in enumerate(node)]
        return lambda facts: [f(facts) for f in items]
    op, args = _operator(node, path)
    if op == "var":
        if not args or not isinstance(args[0], str) or not args[0]:
            raise RuleSyntaxError(f"{path}.var: expected a variable name")
        name, default = args[0], (args[1] if len(args) > 1 else None)
        return lambda facts: facts.get(name, default) if facts.get(name) is not None else default
    if op in ARITHMETIC:
        if len(args) != 2:
            raise RuleSyntaxError(f"{path}.{op}: expected two operands")
        left, right = compile_value(args[0], f"{path}.{op}[0]"), compile_value(args[1], f"{path}.{op}[1]")

        def arith(facts: Facts) -> Any:
            a, b = left(facts), right(facts)
            if not isinstance(a, int | float) or not isinstance(b, int | float):
                return None
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            return None if b == 0 else a / b

        return arith
    predicate = compile_rule(node, path)
    return lambda facts: predicate(facts)


def compile_rule(node: Any, path: str = "$") -> Predicate:
    """Compile a JsonLogic condition to a Python callable ``facts -> bool``. Raises :class:`RuleSyntaxError`."""
    if isinstance(node, bool):
        constant: bool = node
        return lambda facts: constant
    op, args = _operator(node, path)
    if op in COMPARISONS:
        if op in ("<", "<=") and len(args) == 3:
            a, b, c = (compile_value(x, f"{path}.{op}[{i}]") for i, x in enumerate(args))
            return lambda facts: _cmp(op, a(facts), b(facts)) and _cmp(op, b(facts), c(facts))
        if len(args) != 2:
            raise RuleSyntaxError(f"{path}.{op}: expected two operands")
        left, right = compile_value(args[0], f"{path}.{op}[0]"), compile_value(args[1], f"{path}.{op}[1]")
        return lambda facts: _cmp(op, left(facts), right(facts))
    if op in ("and", "or"):
        if not args:
            raise RuleSyntaxError(f"{path}.{op}: expected at least one operand")
        parts = [compile_rule(a, f"{path}.{op}[{i}]") for i, a in enumerate(args)]
        if op == "and":
            return lambda facts: all(p(facts) for p in parts)
        return lambda facts: any(p(facts) for p in parts)
    if op == "!":
        inner = compile_rule(args[0], f"{path}.!") if len(args) == 1 else None
        if inner is None:
            raise RuleSyntaxError(f"{path}.!: expected one operand")
        return lambda facts: not inner(facts)
    if op == "!!":
        value = compile_value(args[0], f"{path}.!!")
        return lambda facts: bool(value(facts))
    if op == "in":
        if len(args) != 2:
            raise RuleSyntaxError(f"{path}.in: expected two operands")
        needle = compile_value(args[0], f"{path}.in[0]")
        if isinstance(args[1], list):
            if not all(_is_literal(x) for x in args[1]):
                raise RuleSyntaxError(f"{path}.in[1]: a membership list must hold literals only")
            members = frozenset(args[1])
            return lambda facts: (v := needle(facts)) is not None and v in members
        haystack = compile_value(args[1], f"{path}.in[1]")

        def contains(facts: Facts) -> bool:
            n, h = needle(facts), haystack(facts)
            return isinstance(n, str) and isinstance(h, str) and n in h

        return contains
    if op == "var":
        value = compile_value(node, path)
        return lambda facts: bool(value(facts))
    raise RuleSyntaxError(f"{path}: operator {op!r} does not yield a boolean")


def variables(node: Any) -> set[str]:
    """The variable names a rule reads (to check them against the facts the hot path provides)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for op, args in node.items():
            if op == "var":
                first = args[0] if isinstance(args, list) else args
                if isinstance(first, str):
                    found.add(first)
            else:
                found |= variables(args)
    elif isinstance(node, list):
        for item in node:
            found |= variables(item)
    return found


# --- DuckDB SQL ------------------------------------------------------------------------------------------------

def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise RuleSyntaxError(f"non-finite number {value!r} in a rule")
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _sql_value(node: Any, columns: Mapping[str, str], path: str, kinds: Mapping[str, str] | None = None) -> str:
    if _is_literal(node):
        return _sql_literal(node)
    op, args = _operator(node, path)
    if op == "var":
        name = args[0]
        column = columns.get(name, '"' + str(name).replace('"', '""') + '"')
        if len(args) > 1:
            return f"coalesce({column}, {_sql_literal(args[1])})"
        return column
    if op in ARITHMETIC:
        left, right = _sql_value(args[0], columns, path, kinds), _sql_value(args[1], columns, path, kinds)
        if op == "/":
            return f"(CAST({left} AS DOUBLE) / nullif({right}, 0))"
        return f"({left} {op} {right})"
    return to_sql(node, columns, path, kinds=kinds)


def _truthy_sql(node: Any, columns: Mapping[str, str], path: str, kinds: Mapping[str, str] | None) -> str:
    """Python's truthiness in SQL. A string is true when non-empty (``CAST('Chrome' AS BOOLEAN)`` is an error in
    DuckDB), so a variable whose kind is ``string`` (``kinds``: the fact catalog's) is tested by its length."""
    value = _sql_value(node, columns, path, kinds)
    if kinds and isinstance(node, dict) and "var" in node:
        args = node["var"] if isinstance(node["var"], list) else [node["var"]]
        if kinds.get(str(args[0])) == "string":
            return f"coalesce(length({value}) > 0, FALSE)"
    return f"coalesce(CAST({value} AS BOOLEAN), FALSE)"


def to_sql(node: Any, columns: Mapping[str, str] | None = None, path: str = "$", *,
           kinds: Mapping[str, str] | None = None) -> str:
    """Translate a rule to a DuckDB boolean expression that is never NULL (same semantics as :func:`compile_rule`).

    ``columns`` maps variable names to SQL expressions; by default a variable is a quoted column of that name.
    ``kinds`` maps variable names to ``string`` / ``number`` / ``boolean`` (the fact catalog's), for truthiness.
    """
    columns = columns or {}
    if isinstance(node, bool):
        return _sql_literal(node)
    op, args = _operator(node, path)
    if op in COMPARISONS:
        sql_op = "=" if op == "==" else "<>" if op == "!=" else op
        if op in ("<", "<=") and len(args) == 3:
            a, b, c = (_sql_value(x, columns, path, kinds) for x in args)
            return f"coalesce(({a} {sql_op} {b}) AND ({b} {sql_op} {c}), FALSE)"
        a, b = (_sql_value(x, columns, path, kinds) for x in args)
        return f"coalesce(({a} {sql_op} {b}), FALSE)"
    if op in ("and", "or"):
        joiner = " AND " if op == "and" else " OR "
        return "(" + joiner.join(to_sql(a, columns, f"{path}.{op}[{i}]", kinds=kinds) for i, a in enumerate(args)) + ")"
    if op == "!":
        return f"(NOT {to_sql(args[0], columns, path, kinds=kinds)})"
    if op in ("!!", "var"):
        return _truthy_sql(args[0] if op == "!!" else node, columns, path, kinds)
    if op == "in":
        needle = _sql_value(args[0], columns, path, kinds)
        if isinstance(args[1], list):
            members = ", ".join(_sql_literal(x) for x in args[1]) or "NULL"
            return f"coalesce({needle} IN ({members}), FALSE)"
        haystack = _sql_value(args[1], columns, path, kinds)
        return f"coalesce(contains({haystack}, {needle}), FALSE)"
    raise RuleSyntaxError(f"{path}: operator {op!r} does not yield a boolean")
