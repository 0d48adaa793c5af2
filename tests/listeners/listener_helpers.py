"""Helpers for listener tests: logged inferences that look like an LLM pipeline's."""

from __future__ import annotations

import json
import time

import pyarrow as pa

GOOD = [
    "Thank you so much, this answer was wonderful and really helpful!",
    "The meeting is scheduled for Tuesday at 10 am in room 4.",
    "Here is a short summary of the quarterly report.",
]
BAD = [
    "Shut up, you stupid fucking idiot, nobody cares about your worthless shit.",
    "I hate all those faggots, they are disgusting and should die.",
]


def llm_rows(texts: list[str | None], t0_ms: int, step_ms: int = 10, errors: list[str | None] | None = None) -> pa.Table:
    n = len(texts)
    return pa.table({
        "time": pa.array([t0_ms + i * step_ms for i in range(n)], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "in.text": pa.array([f"prompt {i}" for i in range(n)], pa.string()),
        "out.generated_text": pa.array(texts, pa.string()),
        "anomaly.count": pa.array([0] * n, pa.int64()),
        "metadata.pipeline_version": pa.array(["v1"] * n, pa.string()),
        "metadata.last_model": pa.array([json.dumps({"model_name": "llm", "model_sha": "x"})] * n, pa.string()),
        "metadata.elapsed": pa.array([[1000]] * n, pa.list_(pa.int64())),
        "metadata.partition": pa.array(["engine-0"] * n, pa.string()),
        "metadata.step": pa.array(["llm"] * n, pa.string()),
        "metadata.error": pa.array(errors or [None] * n, pa.string()),
    })


def now_ms() -> int:
    return int(time.time() * 1000)
