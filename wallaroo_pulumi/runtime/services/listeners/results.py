"""What listeners stored: the scores of a pipeline (with summaries) and assays of their drift."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wallaroo_pulumi.runtime.store.logs import LogStore

from . import drift
from .engine import iso, score_pipeline_name
from .errors import BadListenerRequest, ListenerNotFound

_STATUS_ORDER = {"NoData": 0, "OK": 1, "Warning": 2, "Alert": 3}


class ScoreQueries:
    def __init__(self, list_tasks: Callable[[], list[dict[str, Any]]], logstore: LogStore) -> None:
        self.list_tasks = list_tasks
        self.logstore = logstore

    async def results(
        self, pipeline: str, listener: str | None, limit: int | None, start: int | None, end: int | None,
        run_id: str | None = None, order: str = "Desc",
    ) -> dict[str, Any]:
        """Scores listeners stored for `pipeline` (the monitored one, or a score pipeline): per
        score pipeline, a summary of each numeric score and `limit` records, newest first (``order``
        "Desc", the default) or oldest first ("Asc"); with `run_id`, only the rows that run scored.
        The window is read a page at a time: past the records shown only the score numbers are kept."""
        out = []
        for sp in self.score_pipelines(pipeline, listener):
            count, shown, scores = await asyncio.to_thread(
                _read_scores, self.logstore, sp, start, end, limit, run_id, order
            )
            out.append({
                "score_pipeline": sp,
                "count": count,
                "returned": shown.num_rows,
                "summary": {c[4:]: drift.summarize(v) for c, v in scores.items()},
                "records": _records(shown),
            })
        return {"pipeline": pipeline, "results": out}

    async def assay(
        self,
        *,
        pipeline: str,
        score: str,
        listener: str | None,
        baseline: tuple[int, int],
        window: tuple[int, int],
        width_seconds: float | None,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        """Drift of one score: the baseline window vs the window (or each `width_seconds` slice of
        it); `options` go to :func:`drift.assay` (metric, bins, ...)."""
        b0, b1 = baseline
        w0, w1 = window
        column = score if score.startswith("out.") else f"out.{score}"
        candidates = [pipeline] if listener is None else []
        candidates += self.score_pipelines(pipeline, listener, must_exist=False)
        sp = None
        base_vals: list[Any] = []
        cols_seen: list[str] = []
        for c in candidates:
            vals, cols = await asyncio.to_thread(_read_column, self.logstore, c, column, b0, b1)
            cols_seen = cols_seen or cols
            if column in cols:
                sp, base_vals = c, vals
                break
        if sp is None:
            raise ListenerNotFound(f"score: no column {column!r} in the logs of {candidates} over the baseline "
                                   f"window (columns seen: {cols_seen})")
        windows = []
        step = int(width_seconds * 1000) if width_seconds else (w1 - w0)
        s = w0
        try:
            while s < w1:
                e = min(s + step, w1)
                vals, _ = await asyncio.to_thread(_read_column, self.logstore, sp, column, s, e)
                a = drift.assay(np.asarray(base_vals, dtype=np.float64), np.asarray(vals, dtype=np.float64), **options)
                windows.append({"start": iso(s), "end": iso(e), **a})
                s = e
        except (ValueError, TypeError) as exc:
            raise BadListenerRequest(str(exc)) from None
        worst = max((w["status"] for w in windows), key=lambda x: _STATUS_ORDER[x]) if windows else "NoData"
        return {
            "pipeline": sp,
            "score": score,
            "baseline": {"start": iso(b0), "end": iso(b1), "summary": drift.summarize(np.asarray(base_vals, dtype=np.float64))},
            "status": worst,
            "windows": windows,
        }

    def score_pipelines(self, pipeline: str, listener: str | None, must_exist: bool = True) -> list[str]:
        """The score pipelines of `pipeline` (of its `listener` only, when given)."""
        if listener:
            names = [score_pipeline_name(pipeline, listener)]
            for t in self.list_tasks():
                if (t["monitored_pipeline"] == pipeline and t["listener_model"]["name"] == listener
                        and t["args"].get("output_pipeline")):
                    names.append(t["args"]["output_pipeline"])
        else:
            names = []
            for t in self.list_tasks():
                if t["monitored_pipeline"] == pipeline:
                    n = t["args"].get("output_pipeline") or score_pipeline_name(pipeline, t["listener_model"]["name"])
                    if n not in names:
                        names.append(n)
            if not names and pipeline.endswith("-scores"):
                names = [pipeline]
        names = list(dict.fromkeys(names))
        if must_exist and not names:
            raise ListenerNotFound(f"pipeline: no listener has scored {pipeline!r}; pass `listener` or run a listener task first")
        return names


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


PAGE_ROWS = 10_000  # what one read of a score window holds at most (plus one row group)


def _pages(logstore: LogStore, pipeline: str, start: int | None, end: int | None, columns: list[str] | None = None):
    """The pages of `pipeline` in [start, end), one at a time (bounded memory, each read once)."""
    cursor = None
    while True:
        page = logstore.query(pipeline, start, end, PAGE_ROWS, "Asc", cursor, columns=columns)
        if page.table.num_rows:
            yield page.table
        if page.status == "All" or page.cursor is None:
            return
        cursor = page.cursor


def _read_scores(
    logstore: LogStore, pipeline: str, start: int | None, end: int | None, limit: int | None,
    run_id: str | None = None, order: str = "Desc",
) -> tuple[int, pa.Table, dict[str, np.ndarray]]:
    """(rows, the `limit` newest (Desc) or oldest (Asc) rows by time, every numeric score column as
    float64): the window read a page at a time, keeping only the rows still in the running for
    the records and the score numbers (8 bytes a row)."""
    count = 0
    best: pa.Table | None = None  # at most `limit` rows, with their store position
    position = 0
    scores: dict[str, list[np.ndarray]] = {}
    for t in _pages(logstore, pipeline, start, end):
        if run_id is not None:
            t = _of_run(t, run_id)
        if t.num_rows == 0:
            continue
        count += t.num_rows
        for c in t.column_names:
            if c.startswith("out.") and _numeric(t.column(c).type):
                scores.setdefault(c, []).append(t.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False))
        keyed = t.append_column("__position", pa.array(np.arange(position, position + t.num_rows, dtype=np.int64)))
        position += t.num_rows
        best = keyed if best is None else pa.concat_tables([best, keyed], promote_options="permissive")
        best = _ordered(best, order)
        if limit is not None:
            best = best.slice(0, limit)
    if best is None:
        table = pa.table({"time": pa.array([], pa.timestamp("ms", tz="UTC"))})
    else:
        table = best.drop_columns(["__position"])
    return count, table, {c: np.concatenate(v) for c, v in scores.items()}


def _of_run(t: pa.Table, run_id: str) -> pa.Table:
    """The rows listener run `run_id` stored (``metadata.run_id``); none where no run is recorded."""
    if "metadata.run_id" not in t.column_names:
        return t.slice(0, 0)
    return t.filter(pc.equal(t.column("metadata.run_id"), pa.scalar(run_id, pa.string())))


def _ordered(t: pa.Table, order: str) -> pa.Table:
    """Rows (with their `__position` in the store) by log time, newest first ("Desc") or oldest
    first ("Asc"); the store's order within a time."""
    if t.num_rows < 2 or "time" not in t.column_names:
        return t
    direction = "descending" if order == "Desc" else "ascending"
    return t.sort_by([("time", direction), ("__position", direction)])


def _read_column(
    logstore: LogStore, pipeline: str, column: str, start: int | None, end: int | None
) -> tuple[list[Any], list[str]]:
    """One column of the window (read alone, a page at a time), and the columns the logs have."""
    values: list[Any] = []
    cols: list[str] = []
    for t in _pages(logstore, pipeline, start, end, columns=[column]):
        if column in t.column_names:
            cols = [column]
            values.extend(t.column(column).to_pylist())
    if not cols:  # say which columns there are
        for t in _pages(logstore, pipeline, start, end):
            return [], t.column_names
        return [], []
    return values, cols


def _records(t: pa.Table) -> list[dict[str, Any]]:
    """Wallaroo log-record shape: {time (epoch ms), in: {...}, out: {...}, anomaly: {...}, metadata: {...}}."""
    if t.num_rows == 0:
        return []
    if "time" in t.column_names:
        t = t.set_column(t.column_names.index("time"), "time", t.column("time").cast(pa.int64()))
    cols = {c: t.column(c).to_pylist() for c in t.column_names}
    out = []
    for i in range(t.num_rows):
        rec: dict[str, Any] = {}
        for c, vals in cols.items():
            head, _, tail = c.partition(".")
            if tail:
                rec.setdefault(head, {})[tail] = vals[i]
            else:
                rec[c] = vals[i]
        out.append(rec)
    return out
