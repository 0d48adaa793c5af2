"""Arrow schemas as Wallaroo carries them: base64 of `pyarrow.Schema.serialize()`."""

from __future__ import annotations

import base64

import pyarrow as pa


def schema_to_b64(schema: pa.Schema) -> str:
    if not isinstance(schema, pa.Schema):
        raise TypeError(f"expected a pyarrow.Schema, got {type(schema).__name__}")
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_b64(text: str, field: str = "schema") -> pa.Schema:
    """Decode, naming `field` in the error: a bad schema is a user input error, not a crash."""
    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text, validate=True)))
    except Exception as exc:  # noqa: BLE001 - any decode failure means the same thing to the user
        raise ValueError(
            f"{field} is not a base64-encoded Arrow schema ({exc}); produce it with "
            "base64.b64encode(pa.schema([...]).serialize().to_pybytes())"
        ) from exc


def describe(schema: pa.Schema) -> str:
    """`text: string, score: double`: how schemas read in plans and errors."""
    return ", ".join(f"{f.name}: {f.type}" for f in schema)
