"""`LLMListenerSchedule`: offline scoring of a pipeline's logged inferences by a listener model, once or on cron (D13)."""

from __future__ import annotations

from typing import Any

import pulumi
from croniter import croniter
from pulumi.dynamic import CreateResult, ReadResult, Resource, ResourceProvider, UpdateResult
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..client import NotFoundError
from . import _base
from .connection import Connection, resolve
from .progress import report


class ListenerRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    version: str | None = None


class ScheduleInputs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=128)
    pipeline: str = Field(min_length=1)
    listener: ListenerRef
    schedule: str | None = None
    run_once: bool = Field(default=False, validate_default=True)
    window_seconds: int = Field(default=3600, gt=0)
    timeout_seconds: int = Field(default=600, gt=0)
    text_field: str = "out.generated_text"
    batch_size: int = Field(default=256, ge=1, le=100_000)
    args: dict[str, Any] = Field(default_factory=dict)
    workspace_id: int = Field(default=1, ge=1)
    url: str

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and not croniter.is_valid(v):
            raise ValueError(
                f"{v!r} is not a cron expression; expected 5 fields (minute hour day month weekday), "
                "optionally a 6th for seconds, e.g. '*/15 * * * *'"
            )
        return v

    @field_validator("run_once")
    @classmethod
    def _when(cls, v: bool, info: Any) -> bool:
        if "schedule" in info.data and bool(info.data["schedule"]) == v:
            raise ValueError("set exactly one of schedule (a cron string) or run_once=True")
        return v


COMPARED = ("name", "pipeline", "listener", "schedule", "run_once", "window_seconds", "timeout_seconds",
            "text_field", "batch_size", "args", "workspace_id", "url")
REPLACE_ON = ("name", "pipeline", "workspace_id", "run_once")


def task_args(props: dict[str, Any]) -> dict[str, Any]:
    """The `json` argument of the built-in llm-listener orchestration."""
    return {
        "monitored_pipeline": props["pipeline"],
        "listener_model": props["listener"],
        "window_seconds": int(props.get("window_seconds") or 3600),  # Pulumi sends numbers as floats
        "text_field": props.get("text_field") or "out.generated_text",
        "batch_size": int(props.get("batch_size") or 256),
        **(props.get("args") or {}),
    }


class ScheduleProvider(ResourceProvider):
    serialize_as_secret_always = False  # it captures no secret: keep it readable and cheap to diff

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.check_inputs(ScheduleInputs, news, ScheduleInputs.model_fields)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.diff(olds, news, COMPARED, REPLACE_ON)

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = _base.client(props)
        kind = f"on schedule {props['schedule']!r}" if props.get("schedule") else "once"
        report(f"LLMListenerSchedule {props['name']}: scoring {props['pipeline']} with "
               f"{props['listener']['name']} {kind}")
        task = api.create_task(props["name"], task_args(props), schedule=props.get("schedule"),
                               timeout_s=props.get("timeout_seconds") or 600,
                               workspace_id=int(props.get("workspace_id") or 1))
        return CreateResult(str(task.id), {**props, **_outputs(task)})

    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        task = _base.client(news).update_task(id_, schedule=news.get("schedule"), json_args=task_args(news),
                                              timeout_s=news.get("timeout_seconds") or 600)
        return UpdateResult({**news, **_outputs(task)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            task = _base.client(props).get_task(id_)
        except NotFoundError:
            return ReadResult(None, {})
        if task.status in ("killed", "deleted"):
            return ReadResult(None, {})
        outs = {**props, **inputs_of(task), "token": _base.secret(props.get("token")), **_outputs(task)}
        return _base.read_result(id_, outs, ScheduleInputs.model_fields)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            _base.client(props).delete_task(id_)
        except NotFoundError:
            pass


ORCHESTRATION_KEYS = ("monitored_pipeline", "listener_model", "window_seconds", "text_field", "batch_size")
RUNTIME_DEFAULTS = {"store_text": True, "page_size": 10_000, "max_memory_mb": 512}


def inputs_of(task: Any) -> dict[str, Any]:
    """The inputs that would have created `task` (what a refresh or an import compares)."""
    json_args = dict(task.json_args or {})
    listener = task.listener_model or json_args.get("listener_model") or {}
    extra = {k: v for k, v in json_args.items()
             if k not in ORCHESTRATION_KEYS and RUNTIME_DEFAULTS.get(k, object()) != v}
    return {
        "name": task.name,
        "pipeline": task.monitored_pipeline or json_args.get("monitored_pipeline"),
        "listener": {"name": listener.get("name"), "version": listener.get("version")},
        "schedule": task.schedule,
        "run_once": not task.schedule,
        "window_seconds": int(json_args.get("window_seconds") or 3600),
        "timeout_seconds": int(task.timeout or 600),
        "text_field": json_args.get("text_field") or "out.generated_text",
        "batch_size": int(json_args.get("batch_size") or 256),
        "args": extra,
        "workspace_id": task.workspace_id,
    }


def _outputs(task: Any) -> dict[str, Any]:
    return {"task_id": str(task.id), "status": task.status,
            "next_run": str(task.next_run) if task.next_run else None,
            "last_run_status": task.last_run_status}


class LLMListenerSchedule(Resource, module="wallaroo", name="ListenerSchedule"):
    """Scores `pipeline`'s logged inferences with `listener`, once or on `schedule` (cron).

    Outputs: `task_id`, `status`, `next_run`, `last_run_status`.
    """

    task_id: pulumi.Output[str]
    status: pulumi.Output[str]
    next_run: pulumi.Output[str]
    last_run_status: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        pipeline: Any,
        listener: Any,
        schedule: str | None = None,
        run_once: bool = False,
        window_seconds: int = 3600,
        timeout_seconds: int = 600,
        text_field: str = "out.generated_text",
        batch_size: int = 256,
        args: dict[str, Any] | None = None,
        name: str | None = None,
        workspace_id: int = 1,
        connection: Connection | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        url, token = resolve(connection)
        pipeline_name = pipeline if isinstance(pipeline, str) else pipeline.pipeline_name
        listener_ref = (
            {"name": listener, "version": None} if isinstance(listener, str)
            else pulumi.Output.all(listener.model_name, listener.version).apply(
                lambda v: {"name": v[0], "version": v[1]})
        )
        deps = [r for r in (pipeline, listener) if isinstance(r, pulumi.Resource)]
        props = {
            "name": name or resource_name, "pipeline": pipeline_name, "listener": listener_ref,
            "schedule": schedule, "run_once": run_once, "window_seconds": window_seconds,
            "timeout_seconds": timeout_seconds, "text_field": text_field, "batch_size": batch_size,
            "args": args or {}, "workspace_id": workspace_id, "url": url, "token": token,
            "task_id": None, "status": None, "next_run": None, "last_run_status": None,
        }
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["token"], depends_on=deps)
        )
        super().__init__(ScheduleProvider(), resource_name, props, opts)
