"""What the client's areas share: the content types, the progress callbacks, and small converters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:  # pandas costs ~0.25 s to import: only the methods that return frames load it,
    import pandas as pd  # not every Pulumi provider process and program that merely connects

from wallaroo_pulumi.client.models import (
    ModelRef,
    ModelVersion,
)
from wallaroo_pulumi.client.transport import Transport
from wallaroo_pulumi.schemas import schema_to_b64

JSON_RECORDS = "application/json; format=pandas-records"
ARROW_FILE = "application/vnd.apache.arrow.file"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
CHUNK = 1 << 20

UploadProgress = Callable[[int, int], None]
"""progress(bytes_sent, total_bytes)"""
DeployProgress = Callable[[str], None]
"""progress(message)"""


def schema_b64(schema: pa.Schema | str) -> str:
    return schema if isinstance(schema, str) else schema_to_b64(schema)


def iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def definition_step(step: ModelRef | ModelVersion | dict[str, Any]) -> dict[str, Any]:
    """A definition step: a model as a `ModelInference` step, or a step already in Wallaroo's form
    (one key, its kind, which Wallaroo spells in CamelCase: `{"RandomSplit": {...}}`)."""
    if isinstance(step, dict) and len(step) == 1 and next(iter(step))[:1].isupper():
        return step
    return {"ModelInference": {"models": [step_dict(step)]}}


def step_dict(step: ModelRef | ModelVersion | dict[str, Any]) -> dict[str, Any]:
    if isinstance(step, ModelVersion):
        step = step.ref()
    if isinstance(step, ModelRef):
        return step.model_dump(exclude_none=True)
    return {k: v for k, v in dict(step).items() if v is not None}


def records_to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Wallaroo-shaped records -> DataFrame with `time`, `in.*`, `out.*`, `anomaly.count`, `metadata.*`."""
    import pandas as pd
    if not records:
        return pd.DataFrame()
    frame = pd.json_normalize(records, max_level=1)
    if "time" in frame.columns:
        frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True)
    return frame


class ClientArea:
    """The base of each area's mixin: what `WallarooClient` gives them (its JSON POST, GraphQL query,
    transport and the deployment ids it remembers)."""

    _post: Callable[..., Any]
    _graphql: Callable[..., dict[str, Any]]
    _transport: Transport
    _deployment_ids: dict[str, int]
