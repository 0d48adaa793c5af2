"""HTTP API of the listener service (Wallaroo task API shapes + our listener/assay endpoints).

All POST + JSON. Errors: ``{"code", "status": "error", "error", "source": "listeners"}`` with
400 (bad field, named), 404 (unknown id), 409 (wrong state).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from . import drift
from .engine import ORCHESTRATION, iso, score_pipeline_name, to_ms

if TYPE_CHECKING:
    from .service import ListenerService

RUN_STATUS_WALLAROO = {"running": "running", "succeeded": "success"}  # everything else: failure


def _err(code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "status": "error", "error": message, "source": "listeners"}, status_code=code)


def task_view(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": t["id"],
        "name": t["name"],
        "workspace_id": t["workspace_id"],
        "orch_id": t["orch_id"] or ORCHESTRATION,
        "orchestration": ORCHESTRATION,
        "type": t["type"],
        "status": t["status"],
        "schedule": t["schedule"],
        "timeout": t["timeout_seconds"],
        "json": t["args"],
        "monitored_pipeline": t["monitored_pipeline"],
        "listener_model": t["listener_model"],
        "score_pipeline": t["args"].get("output_pipeline")
        or score_pipeline_name(t["monitored_pipeline"], t["listener_model"]["name"]),
        "next_run": iso(t["next_run"] * 1000) if t["next_run"] else None,
        "last_tick": iso(t["last_tick"] * 1000) if t["last_tick"] else None,
        "last_run_status": t["last_run_status"],
        "created_at": iso(t["created_at"] * 1000),
        "updated_at": iso(t["updated_at"] * 1000),
    }


def run_view(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "run_id": r["id"],
        "task_id": r["task_id"],
        "status": r["status"],
        "run_status": RUN_STATUS_WALLAROO.get(r["status"], "failure"),
        "tick": iso(r["tick"] * 1000) if r["tick"] else None,
        "created_at": iso(r["started"] * 1000),
        "started_at": iso(r["started"] * 1000),
        "finished_at": iso(r["finished"] * 1000) if r["finished"] else None,
        "window_start": iso(r["window_start"] * 1000) if r["window_start"] else None,
        "window_end": iso(r["window_end"] * 1000) if r["window_end"] else None,
        "rows_read": r["rows_read"],
        "rows_scored": r["rows_scored"],
        "rows_skipped": r["rows_skipped"],
        "error": r["error"],
    }


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except Exception:  # noqa: BLE001
        raise _Bad(400, "body: expected a JSON object") from None
    if not isinstance(data, dict):
        raise _Bad(400, "body: expected a JSON object")
    return data


class _Bad(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message


def _str(d: dict[str, Any], k: str, required: bool = True) -> str | None:
    v = d.get(k)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise _Bad(400, f"{k}: expected a non-empty string, got {v!r}")
    return v


def _int(d: dict[str, Any], k: str, default: int | None = None) -> int | None:
    v = d.get(k, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(400, f"{k}: expected an integer, got {v!r}")
    return v


def _range(d: Any, field: str) -> tuple[int, int]:
    if not isinstance(d, dict) or "start" not in d or "end" not in d:
        raise _Bad(400, f"{field}: expected {{start, end}} (RFC 3339 strings or epoch ms)")
    try:
        s, e = to_ms(d["start"]), to_ms(d["end"])
    except (ValueError, TypeError):
        raise _Bad(400, f"{field}: start/end must be RFC 3339 strings or epoch ms") from None
    if s is None or e is None or e <= s:
        raise _Bad(400, f"{field}: end must be after start")
    return s, e


def _numeric(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _read_table(logstore: Any, pipeline: str, start: int | None, end: int | None) -> Any:
    """Every logged row of `pipeline` in [start, end), all pages (schemas unified)."""
    import pyarrow as pa

    tables, cursor = [], None
    while True:
        page = logstore.query(pipeline, start, end, 100_000, "Asc", cursor)
        if page.table.num_rows:
            tables.append(page.table)
        if page.status == "All" or page.cursor is None:
            break
        cursor = page.cursor
    if not tables:
        return pa.table({"time": pa.array([], pa.timestamp("ms", tz="UTC"))})
    return pa.concat_tables(tables, promote_options="permissive")


def _read_column(logstore: Any, pipeline: str, column: str, start: int | None, end: int | None) -> tuple[list[Any], list[str]]:
    t = _read_table(logstore, pipeline, start, end)
    if t.num_rows == 0:
        return [], []
    cols = t.column_names
    if column not in cols:
        return [], cols
    return t.column(column).to_pylist(), cols


def build_router(svc: ListenerService) -> APIRouter:
    router = APIRouter(lifespan=svc.lifespan, tags=["listeners"])

    def handle(fn):
        async def endpoint(request: Request):
            try:
                return await fn(await _body(request))
            except _Bad as exc:
                return _err(exc.code, exc.message)
            except Exception as exc:  # noqa: BLE001
                from .service import TaskError

                if isinstance(exc, TaskError):
                    return _err(exc.code, exc.message)
                raise

        endpoint.__name__ = fn.__name__
        endpoint.__doc__ = fn.__doc__
        return endpoint

    def _orch(d: dict[str, Any]) -> str | None:
        orch = d.get("orch_id")
        if orch not in (None, "", ORCHESTRATION):
            raise _Bad(400, f"orch_id: only the built-in {ORCHESTRATION!r} orchestration runs here "
                            f"(omit orch_id or pass {ORCHESTRATION!r}); got {orch!r}")
        return ORCHESTRATION

    async def run_once(d: dict[str, Any]) -> Any:
        """Create a task that runs the llm-listener orchestration once, now."""
        t = await svc.create_task(
            name=_str(d, "name"), workspace_id=_int(d, "workspace_id", 1), json_args=d.get("json"),
            timeout=d.get("timeout"), orch_id=_orch(d),
        )
        return task_view(t)

    async def run_scheduled(d: dict[str, Any]) -> Any:
        """Create a task that runs the llm-listener orchestration on a cron `schedule`."""
        if d.get("schedule") is None:
            raise _Bad(400, "schedule: required, e.g. '0 * * * *' (hourly) or '* * * * * */10' (every 10 s)")
        t = await svc.create_task(
            name=_str(d, "name"), workspace_id=_int(d, "workspace_id", 1), json_args=d.get("json"),
            schedule=d.get("schedule"), timeout=d.get("timeout"), orch_id=_orch(d),
        )
        return task_view(t)

    async def get_by_id(d: dict[str, Any]) -> Any:
        return task_view(svc.get_task(d.get("id")))

    async def list_tasks(d: dict[str, Any]) -> Any:
        return [task_view(t) for t in svc.list_tasks(_int(d, "workspace_id"))]

    async def list_task_runs(d: dict[str, Any]) -> Any:
        return [run_view(r) for r in svc.list_runs(_str(d, "id"), _int(d, "limit"))]

    async def get_logs_for_run(d: dict[str, Any]) -> Any:
        lines = _int(d, "lines")
        rid = _str(d, "id")
        rows = svc.run_logs(rid, lines)
        return {"id": rid, "logs": [f"{iso(r['ts'] * 1000)} {r['line']}" for r in rows]}

    async def kill(d: dict[str, Any]) -> Any:
        return task_view(await svc.kill_task(_str(d, "id")))

    async def update(d: dict[str, Any]) -> Any:
        tid = _str(d, "id")
        t = await svc.update_task(tid, schedule=d.get("schedule"), json_args=d.get("json"), timeout=d.get("timeout"))
        return task_view(t)

    async def delete(d: dict[str, Any]) -> Any:
        tid = _str(d, "id")
        await svc.delete_task(tid)
        return {"id": tid, "status": "deleted"}

    async def results(d: dict[str, Any]) -> Any:
        """Scores a listener stored for `pipeline` (the monitored one, or a score pipeline)."""
        pipeline = _str(d, "pipeline")
        listener = _str(d, "listener", required=False)
        limit = _int(d, "limit", 1000)
        if limit is not None and limit < 1:
            raise _Bad(400, f"limit: expected a positive integer, got {limit}")
        start = to_ms(d.get("start")) if d.get("start") is not None else None
        end = to_ms(d.get("end")) if d.get("end") is not None else None
        score_pipes = _score_pipelines(svc, pipeline, listener)
        out = []
        for sp in score_pipes:
            t = await asyncio.to_thread(_read_table, svc.logstore, sp, start, end)
            summaries = {}
            for c in t.column_names:
                if c.startswith("out.") and _numeric(t.column(c).type):
                    summaries[c[4:]] = drift.summarize(t.column(c).to_numpy(zero_copy_only=False))
            shown = t.slice(0, limit)
            out.append({
                "score_pipeline": sp,
                "count": t.num_rows,
                "returned": shown.num_rows,
                "summary": summaries,
                "records": _records(shown),
            })
        return {"pipeline": pipeline, "results": out}

    async def assay_run(d: dict[str, Any]) -> Any:
        """Drift of one score: baseline window vs the window (or each `width_seconds` slice of it)."""
        pipeline = _str(d, "pipeline")
        score = _str(d, "score")
        listener = _str(d, "listener", required=False)
        b0, b1 = _range(d.get("baseline"), "baseline")
        w0, w1 = _range(d.get("window"), "window")
        width = d.get("width_seconds") or (d.get("window") or {}).get("width_seconds")
        if width is not None and (isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0):
            raise _Bad(400, f"width_seconds: expected a positive number, got {width!r}")
        column = score if score.startswith("out.") else f"out.{score}"
        candidates = [pipeline] if listener is None else []
        candidates += _score_pipelines(svc, pipeline, listener, must_exist=False)
        sp = None
        base_vals: list[Any] = []
        cols_seen: list[str] = []
        for c in candidates:
            vals, cols = await asyncio.to_thread(_read_column, svc.logstore, c, column, b0, b1)
            cols_seen = cols_seen or cols
            if column in cols:
                sp, base_vals = c, vals
                break
        if sp is None:
            raise _Bad(404, f"score: no column {column!r} in the logs of {candidates} over the baseline "
                            f"window (columns seen: {cols_seen})")
        kw: dict[str, Any] = {}
        for k in ("metric", "bins", "bin_mode", "aggregation", "threshold", "warning_threshold"):
            if d.get(k) is not None:
                kw[k] = d[k]
        windows = []
        step = int(width * 1000) if width else (w1 - w0)
        s = w0
        try:
            while s < w1:
                e = min(s + step, w1)
                vals, _ = await asyncio.to_thread(_read_column, svc.logstore, sp, column, s, e)
                a = drift.assay(np.asarray(base_vals, dtype=np.float64), np.asarray(vals, dtype=np.float64), **kw)
                windows.append({"start": iso(s), "end": iso(e), **a})
                s = e
        except (ValueError, TypeError) as exc:
            raise _Bad(400, str(exc)) from None
        order = {"NoData": 0, "OK": 1, "Warning": 2, "Alert": 3}
        worst = max((w["status"] for w in windows), key=lambda x: order[x]) if windows else "NoData"
        return {
            "pipeline": sp,
            "score": score,
            "baseline": {"start": iso(b0), "end": iso(b1), "summary": drift.summarize(np.asarray(base_vals, dtype=np.float64))},
            "status": worst,
            "windows": windows,
        }

    for path, fn in [
        ("/v1/api/task/run_once", run_once),
        ("/v1/api/task/run_scheduled", run_scheduled),
        ("/v1/api/task/get_by_id", get_by_id),
        ("/v1/api/task/list", list_tasks),
        ("/v1/api/task/list_task_runs", list_task_runs),
        ("/v1/api/task/get_logs_for_run", get_logs_for_run),
        ("/v1/api/task/kill", kill),
        ("/v1/api/task/update", update),
        ("/v1/api/task/delete", delete),
        ("/v1/api/listeners/results", results),
        ("/v1/api/assays/run", assay_run),
    ]:
        router.add_api_route(path, handle(fn), methods=["POST"], name=fn.__name__, summary=(fn.__doc__ or "").strip() or None)

    @router.post("/v1/api/listeners/builtins", name="listener_builtins")
    async def builtins() -> Any:
        from wallaroo_pulumi.scorers import columns_for
        from wallaroo_pulumi.scorers.schemas import LISTENERS

        return [{"name": n, "scores": list(columns_for(n))} for n in LISTENERS] + [
            {"name": "validator", "scores": list(columns_for("combined")), "in_line": True}
        ]

    return router


def _score_pipelines(svc: ListenerService, pipeline: str, listener: str | None, must_exist: bool = True) -> list[str]:
    if listener:
        names = [score_pipeline_name(pipeline, listener)]
        for t in svc.list_tasks():
            if t["monitored_pipeline"] == pipeline and t["listener_model"]["name"] == listener and t["args"].get("output_pipeline"):
                names.append(t["args"]["output_pipeline"])
    else:
        names = []
        for t in svc.list_tasks():
            if t["monitored_pipeline"] == pipeline:
                n = t["args"].get("output_pipeline") or score_pipeline_name(pipeline, t["listener_model"]["name"])
                if n not in names:
                    names.append(n)
        if not names and pipeline.endswith("-scores"):
            names = [pipeline]
    names = list(dict.fromkeys(names))
    if must_exist and not names:
        raise _Bad(404, f"pipeline: no listener has scored {pipeline!r}; pass `listener` or run a listener task first")
    return names


def _records(t: Any) -> list[dict[str, Any]]:
    """Wallaroo log-record shape: {time (epoch ms), in: {...}, out: {...}, anomaly: {...}, metadata: {...}}."""
    import pyarrow as pa

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
