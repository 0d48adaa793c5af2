"""Usage metering: requests, rows and LLM prompt/completion tokens per key and per pipeline, as
Prometheus counters and as hourly rows in the `usage` table (the usage API reads those). The
inference service reports each call once; the key comes from the request's context."""

from __future__ import annotations

import logging
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter

from wallaroo_pulumi.runtime.services.access.keys import ApiKey
from wallaroo_pulumi.runtime.services.access.limits import Limiter
from wallaroo_pulumi.runtime.store.db import Database, OperationalError

#: The key of the request being served (set by the access middleware; None outside a request).
current_key: ContextVar[ApiKey | None] = ContextVar("wallaroo_current_key", default=None)

SCHEMA = """CREATE TABLE IF NOT EXISTS usage (
    key_id INTEGER NOT NULL,           -- 0: no key (a call from inside the runtime)
    pipeline TEXT NOT NULL,
    hour REAL NOT NULL,                -- start of the hour, epoch seconds
    requests INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, pipeline, hour)
) WITHOUT ROWID"""
FIGURES = ("requests", "rows", "prompt_tokens", "completion_tokens")
GroupBy = Literal["key", "pipeline", "hour"]
log = logging.getLogger("wallaroo_pulumi.runtime.access")


@dataclass
class Tokens:
    """LLM tokens one inference spent, summed over the steps that report them."""

    prompt: int = 0
    completion: int = 0

    def add_step(self, inputs: pa.Table, out: pa.Table) -> None:
        """Count the token columns a step made (not those it carried through); -1 is "not reported"."""
        for column in ("prompt_tokens", "completion_tokens"):
            if column in out.schema.names and column not in inputs.schema.names:
                values = out.column(column)
                if pa.types.is_integer(values.type):
                    spent = pc.sum(pc.filter(values, pc.fill_null(pc.greater_equal(values, 0), False))).as_py() or 0
                    if column == "prompt_tokens":
                        self.prompt += spent
                    else:
                        self.completion += spent


class UsageMeter:
    def __init__(self, db: Database, registry: CollectorRegistry, limiter: Limiter) -> None:
        self.db = db
        self.limiter = limiter
        with db.tx() as c:
            c.execute(SCHEMA)
        labels = ["key_id", "key_name", "pipeline"]
        self.counters = {
            "requests": Counter("wallaroo_usage_requests_total", "Inference requests by key and pipeline",
                                labels, registry=registry),
            "rows": Counter("wallaroo_usage_rows_total", "Rows inferred by key and pipeline", labels, registry=registry),
            "prompt_tokens": Counter("wallaroo_usage_prompt_tokens_total",
                                     "LLM prompt tokens the upstream reported, by key and pipeline", labels, registry=registry),
            "completion_tokens": Counter("wallaroo_usage_completion_tokens_total",
                                         "LLM completion tokens the upstream reported, by key and pipeline",
                                         labels, registry=registry),
        }
        self._pending: dict[tuple[int, str, float], list[int]] = {}
        self._lock = threading.Lock()  # the usage API flushes from a worker thread

    def record(self, pipeline: str, rows: int, tokens: Tokens) -> None:
        """One inference of the current request's key: counted, queued for the table, and its
        tokens charged to the key's token limits."""
        key = current_key.get()
        figures = (1, rows, tokens.prompt, tokens.completion)
        key_id, name = (key.id, key.name) if key is not None else (0, "")
        for figure, value in zip(FIGURES, figures, strict=True):
            if value:
                self.counters[figure].labels(str(key_id), name, pipeline).inc(value)
        self._add((key_id, pipeline, time.time() // 3600 * 3600), figures)
        if key is not None:
            self.limiter.charge_tokens(key, tokens.prompt + tokens.completion)

    def flush(self) -> None:
        """Add the figures counted since the last flush to the table (replicas add theirs)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            with self.db.tx() as c:
                c.executemany(
                    "INSERT INTO usage (key_id, pipeline, hour, requests, rows, prompt_tokens, completion_tokens) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id, pipeline, hour) DO UPDATE SET "
                    "requests = usage.requests + excluded.requests, rows = usage.rows + excluded.rows, "
                    "prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens, "
                    "completion_tokens = usage.completion_tokens + excluded.completion_tokens",
                    [(*group, *figures) for group, figures in pending.items()],
                )
        except OperationalError as exc:  # busy: keep them for the next flush
            log.warning("could not write usage now (%s); retrying", exc)
            for group, figures in pending.items():
                self._add(group, figures)

    def _add(self, group: tuple[int, str, float], figures: tuple[int, ...] | list[int]) -> None:
        with self._lock:
            row = self._pending.setdefault(group, [0, 0, 0, 0])
            for i, value in enumerate(figures):
                row[i] += value

    def query(self, *, start: datetime | None, end: datetime | None, key_id: int | None, pipeline: str | None,
              group_by: list[GroupBy]) -> list[dict[str, Any]]:
        """Usage summed over [start, end) by the given groups, from hourly rows (an hour counts
        when it starts in the range)."""
        self.flush()
        where, params = ["1=1"], []
        for clause, value in (("hour >= ?", start.timestamp() if start else None),
                              ("hour < ?", end.timestamp() if end else None),
                              ("key_id = ?", key_id), ("pipeline = ?", pipeline)):
            if value is not None:
                where.append(clause)
                params.append(value)
        columns = {"key": "key_id", "pipeline": "pipeline", "hour": "hour"}
        groups = [columns[g] for g in group_by]
        select = ", ".join(groups + [f"SUM({f}) AS {f}" for f in FIGURES])
        sql = f"SELECT {select} FROM usage WHERE {' AND '.join(where)}"
        if groups:
            sql += f" GROUP BY {', '.join(groups)} ORDER BY {', '.join(groups)}"
        rows = self.db.all(sql, tuple(params))
        return [r for r in rows if r["requests"] is not None]
