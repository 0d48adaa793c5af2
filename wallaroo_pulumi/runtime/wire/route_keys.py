"""The values of the columns a split routes by (`hash_key`, `split_key`), per row of a request.
A routing column need not be in the first model's input schema: one that is not is read from
the request body itself; a row without it has None (random draw, or the control model)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from wallaroo_pulumi.runtime.wire.formats import read_arrow


def request_keys(body: bytes, kind: str, inputs: pa.Table, columns: set[str]) -> dict[str, list[Any]]:
    """{column: its value in each row} for `columns` (the parsed `inputs` first, else the body)."""
    out = {c: inputs.column(c).to_pylist() for c in columns if c in inputs.column_names}
    missing = columns - set(out)
    if not missing:
        return out
    rows = inputs.num_rows
    if kind == "json":
        records = json.loads(body)  # parse_input has accepted it: a non-empty list of objects
        for c in missing:
            out[c] = [rec.get(c) for rec in records]
        return out
    table = read_arrow(body, kind)
    for c in missing:
        out[c] = table.column(c).to_pylist() if c in table.column_names else [None] * rows
    return out
