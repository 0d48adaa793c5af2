"""Wallaroo's validations: the `Check` step's polars expressions (as polars 0.18.15's
`meta.write_json()` writes them, which no maintained polars reads back, D44) evaluated per row
over a result table's flat `in.*` / `out.*` columns with Arrow compute. The subset evaluated:
columns, literals, comparisons, boolean and arithmetic operators, `is_null`/`is_not_null`/
`is_nan`/`is_finite`/`is_in`, `~`, `abs`, `fill_null`, `cast`, `list.get` and `str.contains`.
Anything else is refused when the pipeline is created, naming the validation and the node."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from wallaroo_pulumi.runtime.core.errors import BadRequest

Value = pa.Array | pa.ChunkedArray | pa.Scalar
Node = Callable[[pa.Table], Value]

_COMPARE = {"Eq": pc.equal, "NotEq": pc.not_equal, "Lt": pc.less, "LtEq": pc.less_equal, "Gt": pc.greater,
            "GtEq": pc.greater_equal}
_LOGIC = {"And": pc.and_kleene, "Or": pc.or_kleene, "Xor": pc.xor, "LogicalAnd": pc.and_kleene, "LogicalOr": pc.or_kleene}
_ARITH = {"Plus": pc.add, "Minus": pc.subtract, "Multiply": pc.multiply}
_INTS = {f"{s}Int{n}": getattr(pa, f"{s.lower()}int{n}")() for s in ("", "U") for n in (8, 16, 32, 64)}
_LITERAL_TYPES = {**_INTS, "Float32": pa.float32(), "Float64": pa.float64(), "Utf8": pa.string(), "Boolean": pa.bool_()}
_PREDICATES = {"IsNull": pc.is_null, "IsNotNull": pc.is_valid, "IsNan": pc.is_nan, "IsFinite": pc.is_finite,
               "IsInfinite": pc.is_inf, "IsNot": pc.invert}
BOOLEAN_OPS = set(_COMPARE) | set(_LOGIC)


class ValidationRefused(BadRequest):
    """A `Check` step this runtime cannot evaluate: refused when the pipeline is created."""


@dataclass(frozen=True)
class Validation:
    name: str
    evaluate: Node
    columns: frozenset[str]


class _Compiler:
    """One validation's expression tree -> a function of the flat result table."""

    def __init__(self, where: str, columns: Mapping[str, pa.DataType]) -> None:
        self.where = where
        self.known = columns
        self.used: set[str] = set()

    def refuse(self, what: str) -> ValidationRefused:
        return ValidationRefused(f"{self.where}: {what}")

    def node(self, tree: Any) -> tuple[Node, str]:
        """(function, kind) where kind is 'bool', 'value' or a column name (type known from the schemas)."""
        if not isinstance(tree, dict) or len(tree) != 1:
            raise self.refuse(f"expected one expression node, got {json.dumps(tree)[:120]}")
        [(kind, body)] = tree.items()
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise self.refuse(f"the polars expression {kind!r} is not evaluated here; use comparisons, &, |, ~, "
                              "arithmetic, is_null/is_not_null/is_nan/is_in, abs, fill_null, cast, list.get or str.contains")
        return handler(body)

    def _Column(self, name: Any) -> tuple[Node, str]:
        if not isinstance(name, str):
            raise self.refuse(f"a column must be named by a string, got {name!r}")
        if name not in self.known:
            raise self.refuse(f"column {name!r} is not among the step's columns "
                              f"({', '.join(sorted(self.known)) or 'none'}); name them as Wallaroo does: in.<input> or out.<output>")
        self.used.add(name)
        return (lambda table: table.column(name)), name

    def _Literal(self, body: Any) -> tuple[Node, str]:
        if body == "Null":
            scalar = pa.scalar(None)
        elif isinstance(body, dict) and len(body) == 1:
            [(dtype, value)] = body.items()
            if dtype == "Series":
                return self._series(value)
            if dtype not in _LITERAL_TYPES:
                raise self.refuse(f"literal of type {dtype!r} is not evaluated here")
            scalar = pa.scalar(value, _LITERAL_TYPES[dtype])
        else:
            raise self.refuse(f"unreadable literal {body!r}")
        kind = "bool" if scalar.type == pa.bool_() else "value"
        return (lambda _table: scalar), kind

    def _series(self, body: Any) -> tuple[Node, str]:
        values = body.get("values") if isinstance(body, dict) else None
        if not isinstance(values, list):
            raise self.refuse("a literal series must list its values")
        array = pa.array(values)
        return (lambda _table: array), "series"

    def _Alias(self, body: Any) -> tuple[Node, str]:
        if not isinstance(body, list) or len(body) != 2:
            raise self.refuse("unreadable alias")
        return self.node(body[0])

    def _Cast(self, body: Any) -> tuple[Node, str]:
        inner, _ = self.node(body.get("expr"))
        target = _LITERAL_TYPES.get(body.get("data_type"))
        if target is None:
            raise self.refuse(f"cast to {body.get('data_type')!r} is not evaluated here")
        safe = bool(body.get("strict", True))
        return (lambda table: pc.cast(inner(table), target, safe=safe)), "bool" if target == pa.bool_() else "value"

    def _BinaryExpr(self, body: Any) -> tuple[Node, str]:
        op = body.get("op")
        left, _ = self.node(body.get("left"))
        right, _ = self.node(body.get("right"))
        if op in _COMPARE or op in _LOGIC or op in _ARITH:
            fn = _COMPARE.get(op) or _LOGIC.get(op) or _ARITH[op]
            return (lambda table: fn(left(table), right(table))), "bool" if op in BOOLEAN_OPS else "value"
        if op in ("TrueDivide", "Divide"):
            return (lambda table: pc.divide(_float(left(table)), _float(right(table)))), "value"
        if op == "FloorDivide":
            return (lambda table: pc.floor(pc.divide(_float(left(table)), _float(right(table))))), "value"
        raise self.refuse(f"the operator {op!r} is not evaluated here")

    def _Function(self, body: Any) -> tuple[Node, str]:
        function, inputs = body.get("function"), body.get("input") or []
        args = [self.node(i)[0] for i in inputs]
        if isinstance(function, dict) and len(function) == 1:
            [(family, name)] = function.items()
            if family == "Boolean" and name in _PREDICATES and len(args) == 1:
                pred, arg = _PREDICATES[name], args[0]
                return (lambda table: pred(arg(table))), "bool"
            if family == "Boolean" and name == "IsIn" and len(args) == 2:
                value, options = args
                return (lambda table: pc.is_in(value(table), value_set=_array(options(table)))), "bool"
            if family == "ListExpr" and name == "Get" and len(args) == 2:
                lists, index = args
                return (lambda table: _list_get(lists(table), index(table))), "value"
            if family == "FillNull" and len(args) == 2:
                value, fill = args
                return (lambda table: pc.fill_null(value(table), fill(table))), "value"
            if family == "StringExpr" and isinstance(name, dict) and "Contains" in name and len(args) == 2:
                literal = bool((name["Contains"] or {}).get("literal"))
                text, pattern = args
                match = pc.match_substring if literal else pc.match_substring_regex
                return (lambda table: match(text(table), pattern=_python(pattern(table)))), "bool"
        elif function == "Abs" and len(args) == 1:
            arg = args[0]
            return (lambda table: pc.abs(arg(table))), "value"
        raise self.refuse(f"the polars function {json.dumps(function)} is not evaluated here")


def _float(value: Value) -> Value:
    return pc.cast(value, pa.float64())


def _array(value: Value) -> pa.Array:
    return value if isinstance(value, pa.Array) else pa.array([_python(value)])


def _python(value: Value) -> Any:
    return value.as_py() if isinstance(value, pa.Scalar) else value


def _list_get(lists: Value, index: Value) -> Value:
    """polars' `list.get(i)`: the i-th item of each list (negative from the end), null when out of range."""
    i = int(_python(index))
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lengths = pc.list_value_length(lists).to_pylist()
    items = lists.to_pylist()
    picked = [None if n is None or not -n <= i < n else row[i] for row, n in zip(items, lengths, strict=True)]
    return pa.array(picked, lists.type.value_type)


def compile_check(tree: list[Any], step: int, columns: Mapping[str, pa.DataType], taken: set[str]) -> list[Validation]:
    """The validations of the `Check` step at `definition.steps[step]`, checked against `columns`
    (`in.*` and `out.*` names with their Arrow types); `taken` collects names across Check steps."""
    if not isinstance(tree, list) or not tree:
        raise ValidationRefused(f"definition.steps[{step}].Check.tree: expected a list of polars expressions "
                                "(what the SDK's add_validations writes)")
    out = []
    for i, item in enumerate(tree):
        where = f"definition.steps[{step}].Check.tree[{i}]"
        try:
            parsed = json.loads(item) if isinstance(item, str) else item
        except ValueError:
            raise ValidationRefused(f"{where}: not a polars expression in JSON: {str(item)[:120]!r}") from None
        alias = parsed.get("Alias") if isinstance(parsed, dict) else None
        if not (isinstance(alias, list) and len(alias) == 2 and isinstance(alias[1], str)):
            raise ValidationRefused(f"{where}: a validation is an expression aliased to its name "
                                    "(pipeline.add_validations(name=expr) writes expr.alias(name))")
        name = alias[1]
        where = f"{where} (validation {name!r})"
        if name == "count" or name in taken:
            raise ValidationRefused(f"{where}: " + ("'count' is taken by anomaly.count" if name == "count"
                                                    else "another validation has this name"))
        compiler = _Compiler(where, columns)
        fn, kind = compiler.node(alias[0])
        if kind not in ("bool",) and not (kind in columns and columns[kind] == pa.bool_()):
            raise compiler.refuse("a validation must be a condition (true flags an anomaly), e.g. pl.col('out.score') > 0.9")
        try:  # a dry run over no rows finds type errors (a string compared with a number) now, not per call
            fn(pa.schema([pa.field(n, t) for n, t in columns.items()]).empty_table())
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise compiler.refuse(f"cannot be evaluated over the step's columns: {exc}") from None
        taken.add(name)
        out.append(Validation(name, fn, frozenset(compiler.used)))
    return out


def evaluate(validations: list[Validation], table: pa.Table) -> list[pa.Array]:
    """One boolean column per validation over the flat result `table` (null where it cannot say)."""
    results = []
    for v in validations:
        if not v.columns <= set(table.column_names):  # the model answered without a column it declares
            results.append(pa.nulls(table.num_rows, pa.bool_()))
            continue
        try:
            value = v.evaluate(table)
        except (pa.ArrowException, TypeError, ValueError):  # the model answered other types than it declares
            results.append(pa.nulls(table.num_rows, pa.bool_()))
            continue
        if isinstance(value, pa.Scalar):
            value = pa.array([value.as_py()] * table.num_rows, pa.bool_())
        elif isinstance(value, pa.ChunkedArray):
            value = value.combine_chunks()
        results.append(value.cast(pa.bool_()))
    return results
