"""Which parts of a result or log table an answer carries, and how its column names are joined:
the `dataset[]`, `dataset.exclude[]` and `dataset.separator` query parameters the SDK sends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyarrow as pa

from wallaroo_pulumi.runtime.core.errors import BadRequest
from wallaroo_pulumi.runtime.wire.formats import JSON_RECORDS, encode_records, encode_table, nested_records

PARTS = ("time", "in", "out", "check_failures", "anomaly", "metadata")
STAR = ("time", "in", "out", "check_failures", "anomaly")  # "*": everything but metadata


@dataclass(frozen=True)
class Dataset:
    """`include`/`exclude`: parts (`time`, `in`, `out`, `check_failures`, `anomaly`, `metadata`, `*`)
    or whole columns (`out.generated_text`); `separator`: join flat names with it (JSON records come
    flat, e.g. `in.text`); None keeps the docs' nested JSON records."""

    include: tuple[str, ...] = ("*", "metadata")
    exclude: tuple[str, ...] = ()
    separator: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> Dataset:
        """From query parameters (name -> every value given); none of them: the whole table, nested."""
        include = _values(query, "dataset[]", "dataset")
        exclude = _values(query, "dataset.exclude[]", "dataset.exclude")
        separators = list(query.get("dataset.separator", ()))
        if len(separators) > 1 or (separators and not separators[0]):
            raise BadRequest("dataset.separator: give one non-empty separator, e.g. '.'")
        default = cls()
        return cls(tuple(include) or default.include, tuple(exclude), separators[0] if separators else None)

    def select(self, table: pa.Table) -> pa.Table:
        """The wanted columns, their names joined with the separator (as an Arrow answer carries them)."""
        table = self._pick(table)
        if self.separator in (None, "."):
            return table
        return table.rename_columns([n.replace(".", self.separator) for n in table.schema.names])

    def encode(self, table: pa.Table, kind: str) -> tuple[bytes, str]:
        if kind == "json" and self.separator is not None:
            records = nested_records(self._pick(table))
            return encode_records([_flat(r, self.separator) for r in records]), JSON_RECORDS
        return encode_table(self.select(table), kind)

    def _pick(self, table: pa.Table) -> pa.Table:
        """The wanted columns in Wallaroo's order: time, in.*, out.*, check_failures, anomaly.*, metadata.*
        (a log page whose rows grew columns over time has them last)."""
        return table.select(_selection(self.include, self.exclude, tuple(table.schema.names)))


@lru_cache(maxsize=1024)
def _selection(include: tuple[str, ...], exclude: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """The columns of `names` a dataset selection keeps, in Wallaroo's order; worked out once per
    selection and table shape (an answer's shape repeats call after call)."""
    wanted = [name for name in names if _matches(include, name, _part(name)) and not _matches(exclude, name, _part(name))]
    return tuple(sorted(wanted, key=lambda name: _rank(_part(name))))


def _part(name: str) -> str:
    """The part a column belongs to; a shadow challenger's `out_<model>.<field>` is part of `out`."""
    part = name.split(".", 1)[0]
    return "out" if part.startswith("out_") else part


def _values(query: Mapping[str, Sequence[str]], *names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        for value in query.get(name, ()):
            out += [v.strip() for v in value.split(",") if v.strip()]
    for value in out:
        if value != "*" and value.split(".", 1)[0] not in PARTS:
            raise BadRequest(f"{names[0]}: unknown part {value!r}; expected '*', one of {', '.join(PARTS)} "
                             "or a column such as 'out.generated_text'")
    return out


def _rank(part: str) -> int:
    return PARTS.index(part) if part in PARTS else len(PARTS)


def _matches(selectors: Sequence[str], name: str, part: str) -> bool:
    return any(s == name or s == part or (s == "*" and part in STAR) for s in selectors)


def _flat(record: dict[str, Any], separator: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}{separator}{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out
