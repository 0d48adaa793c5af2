"""HTTP routes of the listener service: Wallaroo's task API, listener results and assays. All
POST + JSON; the service is `app.state.listeners`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from wallaroo_pulumi.orchestration import ORCHESTRATION
from wallaroo_pulumi.runtime.services.access.visible import visible_workspace
from wallaroo_pulumi.runtime.services.listeners import parse
from wallaroo_pulumi.runtime.services.listeners.errors import BadListenerRequest, ListenerNotFound
from wallaroo_pulumi.runtime.services.listeners.service import ListenerService
from wallaroo_pulumi.runtime.services.listeners.views import LAST_RUNS, logs_view, run_view, task_view

router = APIRouter(tags=["listeners"])


def listener_service(request: Request) -> ListenerService:
    """The app's listener service."""
    service: ListenerService = request.app.state.listeners
    return service


Service = Annotated[ListenerService, Depends(listener_service)]
JSON = dict[str, Any]


def _task(svc: ListenerService, task: JSON, run_limit: int | None = LAST_RUNS) -> JSON:
    """A task as Wallaroo's `Task`, with its `run_limit` newest runs."""
    return task_view(task, svc.list_runs(task["id"], run_limit) if run_limit else [])


def _name(d: JSON) -> str:
    return parse.optional_text(d, "name") or ORCHESTRATION


@router.post("/v1/api/task/run_once", response_model=None, status_code=201,
             summary="Create a task that runs an orchestration (`orch_id`; none: the built-in llm-listener) once, now.")
async def run_once(request: Request, svc: Service) -> JSON:
    """Create a task that runs an orchestration once, now."""
    d = await parse.body(request)
    t = await svc.create_task(
        name=_name(d), workspace_id=parse.integer(d, "workspace_id", 1),
        json_args=d.get("json"), timeout=d.get("timeout"), orch_id=parse.orchestration(d),
    )
    return _task(svc, t)


@router.post("/v1/api/task/run_scheduled", response_model=None, status_code=201,
             summary="Create a task that runs an orchestration on a cron `schedule`.")
async def run_scheduled(request: Request, svc: Service) -> JSON:
    """Create a task that runs an orchestration on a cron `schedule`."""
    d = await parse.body(request)
    if d.get("schedule") is None:
        raise BadListenerRequest("schedule: required, e.g. '0 * * * *' (hourly) or '* * * * * */10' (every 10 s)")
    t = await svc.create_task(
        name=_name(d), workspace_id=parse.integer(d, "workspace_id", 1),
        json_args=d.get("json"), schedule=d.get("schedule"), timeout=d.get("timeout"), orch_id=parse.orchestration(d),
    )
    return _task(svc, t)


@router.post("/v1/api/task/run_continuously", response_model=None, status_code=201,
             summary="Create a task that runs an uploaded orchestration continuously: started again, with "
             "backoff, whenever it ends.")
async def run_continuously(request: Request, svc: Service) -> JSON:
    """Create a task that runs an uploaded orchestration continuously."""
    d = await parse.body(request)
    t = await svc.create_task(
        name=_name(d), workspace_id=parse.integer(d, "workspace_id", 1),
        json_args=d.get("json"), timeout=d.get("timeout"), orch_id=parse.orchestration(d), continuous=True,
    )
    return _task(svc, t)


@router.post("/v1/api/task/get_by_id", response_model=None)
async def get_by_id(request: Request, svc: Service) -> JSON:
    d = await parse.body(request)
    return _task(svc, svc.get_task(d.get("id")), parse.integer(d, "run_limit", LAST_RUNS))


@router.post("/v1/api/task/list", response_model=None)
async def list_tasks(request: Request, svc: Service) -> list[JSON]:
    d = await parse.body(request)
    run_limit = parse.integer(d, "run_limit", LAST_RUNS)
    orch, sha = parse.task_filter(d)
    ws = parse.integer(d, "workspace_id")
    ws = visible_workspace(request.scope.get("state", {})) if ws is None else ws  # a key of one workspace: its own
    tasks = svc.list_tasks(ws, parse.boolean(d, "killed"), orch_id=orch, orch_sha=sha)
    return [_task(svc, t, run_limit) for t in tasks]


@router.post("/v1/api/task/list_task_runs", response_model=None)
async def list_task_runs(request: Request, svc: Service) -> list[JSON]:
    d = await parse.body(request)
    runs = svc.list_runs(d.get("task_id"), parse.integer(d, "limit"), status=parse.run_status(d),
                         window=parse.run_time_range(d), field="task_id")
    return [run_view(r) for r in runs]


@router.post("/v1/api/task/get_run_details", response_model=None)
async def get_run_details(request: Request, svc: Service) -> JSON:
    d = await parse.body(request)
    run = svc.get_run(d.get("pod_id"), "pod_id")
    if d.get("task") not in (None, run["task_id"]):
        raise ListenerNotFound(f"task: run {run['id']} belongs to task {run['task_id']}, not {d.get('task')}")
    return run_view(run)


@router.post("/v1/api/task/get_logs_for_run", response_model=None)
async def get_logs_for_run(request: Request, svc: Service) -> JSON:
    d = await parse.body(request)
    lines = parse.integer(d, "lines")
    rid = parse.text(d, "id")
    return logs_view(rid, svc.run_logs(rid, lines))


@router.post("/v1/api/task/kill", response_model=None, status_code=202)
async def kill(request: Request, svc: Service) -> JSON:
    d = await parse.body(request)
    return _task(svc, await svc.kill_task(parse.text(d, "id")))


@router.post("/v1/api/task/update", response_model=None)
async def update(request: Request, svc: Service) -> JSON:
    d = await parse.body(request)
    tid = parse.text(d, "id")
    t = await svc.update_task(tid, schedule=d.get("schedule"), json_args=d.get("json"), timeout=d.get("timeout"))
    return _task(svc, t)


@router.post("/v1/api/task/delete", response_model=None)
async def delete(request: Request, svc: Service) -> JSON:
    d = await parse.body(request)
    tid = parse.text(d, "id")
    await svc.delete_task(tid)
    return {"id": tid, "status": "deleted"}


@router.post("/v1/api/listeners/results", response_model=None,
             summary="Scores a listener stored for `pipeline` (the monitored one, or a score pipeline), newest "
             "first; `run_id` keeps one run's.")
async def results(request: Request, svc: Service) -> JSON:
    """Scores a listener stored for `pipeline` (the monitored one, or a score pipeline)."""
    d = await parse.body(request)
    pipeline = parse.text(d, "pipeline")
    listener = parse.optional_text(d, "listener")
    limit = parse.limit(d)
    start, end = parse.epoch_ms(d, "start"), parse.epoch_ms(d, "end")
    run_id = parse.optional_text(d, "run_id")
    order = d.get("order", "Desc")
    if order not in ("Asc", "Desc"):
        raise BadListenerRequest(f"order: expected 'Desc' (newest first, the default) or 'Asc', got {order!r}")
    return await svc.results.results(pipeline, listener, limit, start, end, run_id=run_id, order=order)


@router.post("/v1/api/assays/run", response_model=None,
             summary="Drift of one score: baseline window vs the window (or each `width_seconds` slice of it).")
async def assay_run(request: Request, svc: Service) -> JSON:
    """Drift of one score: baseline window vs the window (or each `width_seconds` slice of it)."""
    d = await parse.body(request)
    pipeline = parse.text(d, "pipeline")
    score = parse.text(d, "score")
    listener = parse.optional_text(d, "listener")
    baseline = parse.time_range(d.get("baseline"), "baseline")
    window = parse.time_range(d.get("window"), "window")
    width = parse.width_seconds(d)
    return await svc.results.assay(pipeline=pipeline, score=score, listener=listener, baseline=baseline,
                                   window=window, width_seconds=width, options=parse.assay_options(d))


@router.post("/v1/api/listeners/builtins", name="listener_builtins")
async def builtins() -> Any:
    from wallaroo_pulumi.scorers import columns_for
    from wallaroo_pulumi.scorers.schemas import LISTENERS

    return [{"name": n, "scores": list(columns_for(n))} for n in LISTENERS] + [
        {"name": "validator", "scores": list(columns_for("combined")), "in_line": True}
    ]
