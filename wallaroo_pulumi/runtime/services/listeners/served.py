"""Which model answered each logged row a listener scores, so scores compare per model version:
a split's or fallback's `out._model_split` ({name, version, sha}), else the row's
`metadata.last_model` ({model_name, model_sha}) of a plain pipeline."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa


def _from_last_model(text: Any) -> str | None:
    try:
        last = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(last, dict) or "model_name" not in last:
        return None
    return json.dumps({"name": last["model_name"], "version": None, "sha": last.get("model_sha")}, separators=(",", ":"))


def served_models(table: pa.Table) -> list[str | None]:
    """Per row, the JSON {name, version, sha} of the model that served it (None when not logged)."""
    rows = table.num_rows
    split = table.column("out._model_split").to_pylist() if "out._model_split" in table.column_names else [None] * rows
    last = table.column("metadata.last_model").to_pylist() if "metadata.last_model" in table.column_names else [None] * rows
    return [s[0] if s else _from_last_model(m) for s, m in zip(split, last, strict=True)]
