"""`WallarooTask`: an orchestration's main.py run once, on a cron schedule or continuously, with
its arguments as Pulumi inputs; `secret_args` stay secret in the state (D50)."""

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


class TaskInputs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=128)
    orchestration_id: str = Field(min_length=1)
    schedule: str | None = None
    continuous: bool = False
    timeout_seconds: int | None = Field(default=None, gt=0)
    args: dict[str, Any] = Field(default_factory=dict)
    secret_args: dict[str, Any] = Field(default_factory=dict)
    workspace_id: int = Field(default=1, ge=1)
    url: str

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and not croniter.is_valid(v):
            raise ValueError(f"{v!r} is not a cron expression; expected 5 fields (minute hour day month weekday), "
                             "optionally a 6th for seconds, e.g. '*/15 * * * *'")
        return v

    @field_validator("continuous")
    @classmethod
    def _one_mode(cls, v: bool, info: Any) -> bool:
        if v and info.data.get("schedule"):
            raise ValueError("set either schedule (cron) or continuous=True, not both")
        return v

    @field_validator("secret_args")
    @classmethod
    def _once_each(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        both = set(info.data.get("args") or {}) & set(v)
        if both:
            raise ValueError(f"{sorted(both)} also in args; give each argument once")
        return v


COMPARED = ("name", "orchestration_id", "schedule", "continuous", "timeout_seconds", "args", "secret_args",
            "workspace_id", "url")
REPLACE_ON = ("name", "orchestration_id", "continuous", "workspace_id")


def _mode(props: dict[str, Any]) -> str:
    return "continuous" if props.get("continuous") else "scheduled" if props.get("schedule") else "once"


def task_json(props: dict[str, Any]) -> dict[str, Any]:
    """The task's `json`: its arguments, secret ones included (the runtime needs them)."""
    return {**(_base.reveal(props.get("args")) or {}), **(_base.reveal(props.get("secret_args")) or {})}


def _timeout(props: dict[str, Any]) -> float | None:
    value = props.get("timeout_seconds")
    return float(value) if value else None


class TaskProvider(ResourceProvider):
    serialize_as_secret_always = False  # secret_args are marked secret on their own (additional_secret_outputs)

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.check_inputs(TaskInputs, news, TaskInputs.model_fields)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        replace_on = REPLACE_ON
        if _mode(olds) != _mode(news) or _mode(news) == "once":
            replace_on = COMPARED  # a run-once task ran with what it had: a change is a new task
        return _base.diff(olds, news, COMPARED, tuple(k for k in replace_on if k != "url"))

    def create(self, props: dict[str, Any]) -> CreateResult:
        report(f"WallarooTask {props['name']}: running orchestration {props['orchestration_id']} {_mode(props)}")
        task = _base.client(props).create_task(
            props["name"], task_json(props), schedule=props.get("schedule"), timeout_s=_timeout(props),
            workspace_id=int(props.get("workspace_id") or 1), orch_id=props["orchestration_id"],
            continuous=bool(props.get("continuous")))
        return CreateResult(task.id, {**props, **_outputs(task)})

    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        task = _base.client(news).update_task(id_, schedule=news.get("schedule"), json_args=task_json(news),
                                              timeout_s=_timeout(news))
        return UpdateResult({**news, **_outputs(task)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            task = _base.client(props).get_task(id_)
        except NotFoundError:
            return ReadResult(None, {})
        if task.status == "killed":
            return ReadResult(None, {})
        live = dict(task.json_args or {})
        secret_keys = set(_base.reveal(props.get("secret_args")) or {})
        public = {k: v for k, v in live.items() if k not in secret_keys}
        outs = {
            **props, "name": task.name, "orchestration_id": task.orch_id, "schedule": task.schedule,
            "continuous": task.type == "continuous", "timeout_seconds": int(task.timeout) if task.timeout else None,
            # an import knows no secret_args: every argument is kept secret until the program says which are not
            "args": public if "args" in props else _base.secret(public),
            "secret_args": _base.secret({k: v for k, v in live.items() if k in secret_keys}),
            "workspace_id": task.workspace_id, "token": _base.secret(props.get("token")), **_outputs(task),
        }
        return _base.read_result(id_, outs, TaskInputs.model_fields)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            _base.client(props).delete_task(id_)
        except NotFoundError:
            pass


def _outputs(task: Any) -> dict[str, Any]:
    return {"task_id": task.id, "status": task.status, "last_run_status": task.last_run_status,
            "next_run": str(task.next_run) if task.next_run else None}


class WallarooTask(Resource, module="wallaroo", name="Task"):
    """Runs `orchestration`'s main.py: once (neither `schedule` nor `continuous`), on a cron
    `schedule`, or `continuous`ly (started again with backoff whenever it ends). `args` and
    `secret_args` (kept secret in the state) are what `wallaroo.Client().task_args()` returns inside it.

    Outputs: `task_id`, `status`, `last_run_status`, `next_run`.
    """

    task_id: pulumi.Output[str]
    status: pulumi.Output[str]
    last_run_status: pulumi.Output[str]
    next_run: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        orchestration: Any,
        schedule: str | None = None,
        continuous: bool = False,
        args: dict[str, Any] | None = None,
        secret_args: dict[str, Any] | None = None,
        timeout_seconds: int | None = None,
        name: str | None = None,
        workspace_id: int = 1,
        connection: Connection | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        url, token = resolve(connection)
        orch_id = orchestration if isinstance(orchestration, str) else orchestration.orchestration_id
        props = {
            "name": name or resource_name, "orchestration_id": orch_id, "schedule": schedule, "continuous": continuous,
            # the runtime's default for runs that end (600 s), none for a continuous one: a refresh reads the same
            "timeout_seconds": timeout_seconds if timeout_seconds is not None else None if continuous else 600,
            "args": args or {},
            "secret_args": pulumi.Output.secret(secret_args) if secret_args else {},
            "workspace_id": workspace_id, "url": url, "token": token,
            "task_id": None, "status": None, "last_run_status": None, "next_run": None,
        }
        deps = [orchestration] if isinstance(orchestration, pulumi.Resource) else []
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["token", "secret_args"], depends_on=deps))
        super().__init__(TaskProvider(), resource_name, props, opts)
