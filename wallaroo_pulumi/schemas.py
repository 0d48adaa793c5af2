"""Arrow schemas as Wallaroo carries them: base64 of `pyarrow.Schema.serialize()`.

The one codec of the package: provider, client and runtime all use it.
"""

from __future__ import annotations

import base64
import binascii

import pyarrow as pa


def schema_to_b64(schema: pa.Schema) -> str:
    if not isinstance(schema, pa.Schema):
        raise TypeError(f"expected a pyarrow.Schema, got {type(schema).__name__}")
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_b64(text: str, field: str = "schema") -> pa.Schema:
    """Decode, naming `field` in the ValueError: a bad schema is a user input error, not a crash."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError(f"{field}: not valid base64 (expected base64 of pyarrow Schema.serialize())") from None
    try:
        return pa.ipc.read_schema(pa.py_buffer(raw))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
        raise ValueError(f"{field}: base64 decodes but is not a serialized Arrow schema ({exc})") from None


def describe(schema: pa.Schema) -> str:
    """`text: string, score: double`: how schemas read in plans and errors."""
    return ", ".join(f"{f.name}: {f.type}" for f in schema)
