"""One listener run: score the rows of the monitored pipeline's logged inferences in the window
that its stream has not scored yet, and append the scores as inference logs of the score pipeline.
Score columns, row keys and exactly-once: ``docs/listeners.md``, "What a run does"."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.runtime.store.logs.settled import sealed_within
from wallaroo_pulumi.runtime.store.logs.time_column import to_ms

from .errors import ListenerRunError
from .executor import Executor, ListenerModelRef
from .row_keys import held_bytes, page_keys
from .score_table import build_score_table, resolve_text_column
from .served import served_models
from .store import TaskStore


class ListenerRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    version: str | None = None


class ListenerArgs(BaseModel):
    """The task's ``json`` for the built-in ``llm-listener`` orchestration."""

    model_config = ConfigDict(extra="allow")

    monitored_pipeline: str = Field(min_length=1)
    listener_model: ListenerRef
    window_seconds: float = Field(default=3600, gt=0)
    text_field: str = Field(default="out.generated_text", min_length=1)
    batch_size: int = Field(default=256, ge=1, le=100_000)
    output_pipeline: str | None = None
    start: datetime | int | None = None
    end: datetime | int | None = None
    store_text: bool = True
    page_size: int = Field(default=10_000, ge=1, le=1_000_000)
    max_memory_mb: float = Field(default=512, gt=0)
    """What one run may hold (a page of rows, their copies for scoring, its keys); over it the run fails."""

    @field_validator("listener_model", mode="before")
    @classmethod
    def _ref(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    def listener_name(self) -> str:
        return self.listener_model.name

    def score_pipeline(self) -> str:
        return self.output_pipeline or score_pipeline_name(self.monitored_pipeline, self.listener_model.name)


def score_pipeline_name(monitored: str, listener: str) -> str:
    return f"{monitored}-{listener}-scores"


def stream_id(monitored: str, score_pipeline: str) -> str:
    return f"{monitored}->{score_pipeline}"


def iso(ms: float | int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat().replace("+00:00", "Z")


# -- the run ------------------------------------------------------------------
@dataclass
class RunStats:
    rows_read: int = 0
    rows_scored: int = 0
    rows_skipped: int = 0  # failed inferences / null text
    rows_already: int = 0  # scored before (by this stream)
    batches: int = 0
    seconds: float = 0.0
    score_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


async def run_listener(
    *,
    run_id: str,
    task: dict[str, Any],
    args: ListenerArgs,
    ref: ListenerModelRef,
    executor: Executor,
    logstore: LogStore,
    store: TaskStore,
    log: Callable[[str], None],
    now_ms: int | None = None,
    stats: RunStats | None = None,
) -> RunStats:
    """Score the window; raises on failure (the caller records the run status). Pass `stats`
    to see the counts so far when the run fails, times out or is killed."""
    t0 = time.perf_counter()
    stats = RunStats() if stats is None else stats
    monitored = args.monitored_pipeline
    out_pipe = args.score_pipeline()
    stream = stream_id(monitored, out_pipe)
    end_ms = to_ms(args.end) if args.end is not None else (now_ms if now_ms is not None else int(time.time() * 1000))
    start_ms = to_ms(args.start) if args.start is not None else end_ms - int(args.window_seconds * 1000)
    store.update_run(run_id, window_start=start_ms / 1000.0, window_end=end_ms / 1000.0)
    log(
        f"listener {ref.name} (version {ref.version}) scoring {monitored} "
        f"[{iso(start_ms)}, {iso(end_ms)}) into {out_pipe}, batch size {args.batch_size}"
    )
    # sealed segments this stream settled before are skipped unread; those sealed now with every row in
    # the window are settled by this run if it ends well (D63)
    settled = await asyncio.to_thread(store.settled, stream)
    snapshot = sealed_within(await asyncio.to_thread(logstore.sealed, monitored), start_ms, end_ms)
    held: list[int] = []  # times of rows another run holds unsettled: their segments stay unsettled
    seen: Counter = Counter()
    cursor: str | None = None
    complete = False  # every page read to the end
    text_col_seen: str | None = None
    columns_seen: set[str] = set()
    last_progress = time.monotonic()
    while True:
        page = await asyncio.to_thread(
            logstore.query, monitored, start_ms, end_ms, args.page_size, "Asc", cursor, skip=settled
        )
        table = page.table
        if table.num_rows:
            _check_memory(table, seen, args, stats)
            stats.rows_read += table.num_rows
            columns_seen.update(table.column_names)
            keys = await asyncio.to_thread(page_keys, table, seen, page.floor_ms)
            text_col = resolve_text_column(table.column_names, args.text_field)
            if text_col is None:
                stats.rows_skipped += table.num_rows
            else:
                text_col_seen = text_col
                await _score_page(
                    table=table, keys=keys, text_col=text_col, run_id=run_id, task=task, args=args,
                    ref=ref, executor=executor, logstore=logstore, store=store, stream=stream,
                    out_pipe=out_pipe, stats=stats, log=log, held=held,
                )
            await asyncio.to_thread(
                store.update_run, run_id, rows_read=stats.rows_read, rows_scored=stats.rows_scored,
                rows_skipped=stats.rows_skipped,
            )
            if time.monotonic() - last_progress > 2.0 or page.status == "All":
                last_progress = time.monotonic()
                _progress(log, stats, time.perf_counter() - t0)
        if page.status == "SchemaChange" and page.cursor is None:
            break
        if page.status == "All" or page.cursor is None:
            complete = page.status == "All"
            break
        cursor = page.cursor
    if stats.rows_read and text_col_seen is None:
        raise ListenerRunError(
            f"text_field {args.text_field!r}: no such column in {monitored}'s logs "
            f"(columns: {sorted(columns_seen)}); e.g. 'out.generated_text'"
        )
    done = [p for p in snapshot if complete and not any(p.tmin <= t <= p.tmax for t in held)]  # type: ignore[operator]
    await asyncio.to_thread(store.settle_segments, stream, done, start_ms)
    stats.extra["segments_settled"] = len(done)
    if done:
        log(f"settled {len(done)} sealed segment{'s' if len(done) != 1 else ''}: later runs of this stream skip them")
    stats.seconds = time.perf_counter() - t0
    log(
        f"done: read {stats.rows_read}, scored {stats.rows_scored}, already scored {stats.rows_already}, "
        f"skipped {stats.rows_skipped} in {stats.seconds:.2f}s"
    )
    return stats


def _check_memory(table: pa.Table, seen: Counter, args: ListenerArgs, stats: RunStats) -> None:
    """Fail the run when scoring this page would hold more than its `max_memory_mb`."""
    held = held_bytes(table, seen)
    stats.extra["peak_held_bytes"] = max(stats.extra.get("peak_held_bytes", 0), held)
    if held > args.max_memory_mb * 2**20:
        raise ListenerRunError(
            f"max_memory_mb: this run needed {held / 2**20:.0f} MB to score a page of {table.num_rows} rows "
            f"(page_size {args.page_size}), over its cap of {args.max_memory_mb:g} MB; lower page_size "
            f"or raise max_memory_mb"
        )


def _progress(log: Callable[[str], None], stats: RunStats, elapsed_s: float) -> None:
    log(
        f"progress: read {stats.rows_read}, scored {stats.rows_scored}, "
        f"already scored {stats.rows_already}, skipped {stats.rows_skipped} "
        f"({stats.rows_scored / elapsed_s if elapsed_s > 0 else 0:.0f} rows/s)"
    )


async def _score_page(
    *, table: pa.Table, keys: list[str], text_col: str, run_id: str, task: dict[str, Any],
    args: ListenerArgs, ref: ListenerModelRef, executor: Executor, logstore: LogStore, store: TaskStore,
    stream: str, out_pipe: str, stats: RunStats, log: Callable[[str], None], held: list[int],
) -> None:
    texts_all, times_all, parts_all, usable = await asyncio.to_thread(_prepare, table, text_col)
    models_all = served_models(table)
    stats.rows_skipped += table.num_rows - len(usable)
    bs = args.batch_size
    for b in range(0, len(usable), bs):
        idx = usable[b : b + bs]
        bkeys = [keys[i] for i in idx]
        btimes = [times_all[i] for i in idx]
        claiming = asyncio.ensure_future(asyncio.to_thread(store.claim, stream, run_id, bkeys, btimes))
        try:
            claimed = await asyncio.shield(claiming)
        except asyncio.CancelledError:  # cancelled while claiming: what the claim took is given back
            with contextlib.suppress(Exception):
                taken = (await claiming).mine
                await asyncio.to_thread(store.release, stream, [bkeys[j] for j in taken], run_id)
            raise
        mine = claimed.mine
        held.extend(btimes[j] for j in claimed.held)
        stats.rows_already += len(idx) - len(mine)
        if not mine:
            continue
        sel = [idx[j] for j in mine]
        ckeys = [keys[i] for i in sel]
        appended = False
        try:
            texts = [texts_all[i] for i in sel]
            ts = time.perf_counter_ns()
            out = await executor.predict(pa.table({"text": pa.array(texts, pa.string())}))
            elapsed = time.perf_counter_ns() - ts
            stats.score_seconds += elapsed / 1e9
            if out.num_rows != len(sel):
                raise ListenerRunError(
                    f"listener {ref.name} returned {out.num_rows} rows for a batch of {len(sel)}"
                )
            scores = build_score_table(
                out=out, texts=texts, keys=ckeys, times_ms=[times_all[i] for i in sel],
                partitions=[parts_all[i] for i in sel], ref=ref, monitored=args.monitored_pipeline,
                task_id=task["id"], run_id=run_id, elapsed_ns=elapsed, store_text=args.store_text,
                models=[models_all[i] for i in sel],
            )
            # The append must finish (or fail) before we decide about the claims, even if this
            # run is being cancelled: shield it and wait it out.
            fut = asyncio.ensure_future(asyncio.to_thread(logstore.append, out_pipe, scores))
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                try:
                    await fut
                    appended = True
                except Exception:  # noqa: BLE001
                    pass
                raise
            appended = True
        finally:  # off the serving loop (an fsync), and seen through even when cancelled
            settle = store.mark_done if appended else store.release
            done = asyncio.ensure_future(asyncio.to_thread(settle, stream, ckeys, run_id))
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                await done
                raise
        stats.rows_scored += len(sel)
        stats.batches += 1
        now = time.monotonic()
        if now - stats.extra.get("saved", 0.0) > 0.5:  # live progress for list_task_runs
            stats.extra["saved"] = now
            await asyncio.to_thread(
                store.update_run, run_id, rows_read=stats.rows_read, rows_scored=stats.rows_scored,
                rows_skipped=stats.rows_skipped,
            )


def _prepare(table: pa.Table, text_col: str) -> tuple[list[Any], list[int], list[Any], list[int]]:
    """A page's texts, times and partitions as lists, and which rows can be scored (no error, text)."""
    texts_all = table.column(text_col).to_pylist()
    times_all = table.column("time").cast(pa.int64()).to_pylist()
    errors = (
        table.column("metadata.error").to_pylist() if "metadata.error" in table.column_names else [None] * table.num_rows
    )
    parts_all = (
        table.column("metadata.partition").cast(pa.string()).to_pylist()
        if "metadata.partition" in table.column_names else [None] * table.num_rows
    )
    usable = [i for i in range(table.num_rows) if errors[i] is None and isinstance(texts_all[i], str)]
    return texts_all, times_all, parts_all, usable


def reconcile(store: TaskStore, logstore: LogStore, live_runs: set[str], log: Callable[[str], None] | None = None,
              only: set[str] | None = None) -> int:
    """Settle claims of runs that died (of `only` those, when given): done if the score pipeline
    holds the row, else released."""
    fixed = 0
    for stream, claims in store.stale_claims(live_runs, only).items():
        monitored, _, out_pipe = stream.partition("->")
        lo = min(ms for _, ms in claims)
        hi = max(ms for _, ms in claims) + 1
        present: set[str] = set()
        cursor = None
        while True:
            page = logstore.query(out_pipe, lo, hi, 10_000, "Asc", cursor, columns=["in.source_key"])
            if "in.source_key" in page.table.column_names:
                present.update(k for k in page.table.column("in.source_key").to_pylist() if k)
            if page.status == "All" or page.cursor is None:
                break
            cursor = page.cursor
        done = [k for k, _ in claims if k in present]
        gone = [k for k, _ in claims if k not in present]
        store.mark_done(stream, done)
        store.release(stream, gone)
        fixed += len(claims)
        if log:
            log(f"reconciled {len(claims)} claims on {stream}: {len(done)} were appended, {len(gone)} released")
    return fixed
