"""What a request touches, found the way its route will find it: the same fields, the same
defaults and pydantic's coercion, so a scope check and the route never disagree."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from wallaroo_pulumi.runtime.core.errors import BadRequest, WallarooError
from wallaroo_pulumi.runtime.services.access.policy import MISSING, NOTHING, UNOWNED, Find, Rule, Target
from wallaroo_pulumi.runtime.services.listeners.engine import score_pipeline_name
from wallaroo_pulumi.runtime.store.db import Database, OperationalError
from wallaroo_pulumi.runtime.wire.answers import TOPIC

_INT = TypeAdapter(int)
InferResolver = Callable[[str, str | None], tuple[str, int | None]]


def integer(body: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    try:
        return _INT.validate_python(value)
    except ValidationError:
        raise BadRequest(f"{name}: expected an integer, got {value!r}") from None


class Targets:
    def __init__(self, db: Database, resolve_infer: InferResolver, log_names: Callable[[], Iterable[str]]) -> None:
        self.db = db
        self.resolve_infer = resolve_infer
        self.log_names = log_names

    def find(self, rule: Rule, params: dict[str, str], body: dict[str, Any]) -> Target:
        """`body` is the JSON body (or an upload's metadata) for the finds that need one."""
        kind = rule.find
        if kind is Find.NOTHING:
            return NOTHING
        if kind is Find.INFER:
            return self._infer(params)
        if kind is Find.LISTED:
            ws = integer(body, "workspace_id")
            return Target(None if ws is None else frozenset({ws}))
        if kind in (Find.UPLOAD, Find.IN_WORKSPACE):
            return Target(frozenset({integer(body, "workspace_id", 1) or 1}))
        if kind is Find.WORKSPACES:
            ids = body.get("workspace_ids")
            return Target(None) if not ids or not isinstance(ids, list) else Target(frozenset(
                integer({"id": i}, "id") or 0 for i in ids))
        if kind is Find.ORCHESTRATION:
            named = body.get(rule.name_field or "id")
            rows = [self._listener_row("SELECT workspace_id FROM orchestrations WHERE id = ?", oid)
                    for oid in (named if isinstance(named, list) else [named])]
            owners = frozenset(r["workspace_id"] for r in rows if r is not None)
            # none: unknown ids (the route's 404) or the built-in llm-listener, which holds no workspace's data
            return Target(owners) if owners else MISSING
        if kind is Find.WORKSPACE:
            return self._new_pipeline(body)
        if kind is Find.PIPELINE:
            return self._pipeline(body, rule.name_field)
        if kind is Find.PIPELINE_NAMED:
            name = body.get("pipeline_id")
            return Target(frozenset({integer(body, "workspace_id", 1) or 1}), name) if isinstance(name, str) else MISSING
        if kind is Find.DEPLOYMENT:
            return Target(frozenset({integer(body, "workspace_id", 1) or 1}))
        if kind is Find.MODEL:
            return self._model(body)
        if kind is Find.MODEL_VERSION:
            return self._model_version(integer(body, "model_version_id"))
        if kind is Find.TOPIC:
            match = TOPIC.match(params.get("topic", ""))
            return self.logs_of(match[2]) if match else MISSING
        if kind in (Find.LOGS, Find.SCORES):
            name = body.get(rule.name_field or "")
            return self.logs_of(name, scores=kind is Find.SCORES) if isinstance(name, str) else MISSING
        if kind is Find.NEW_TASK:
            return self._with_monitored(frozenset({integer(body, "workspace_id", 1) or 1}), body)
        if kind is Find.TASK:
            task = self._task(body.get(rule.name_field or "id"))
            return MISSING if task is None else self._with_monitored(frozenset({task["workspace_id"]}), body)
        if kind is Find.RUN:
            row = self._listener_row("SELECT task_id FROM listener_runs WHERE id = ?", body.get(rule.name_field or "id"))
            task = self._task(row["task_id"]) if row is not None else None
            return MISSING if task is None else Target(frozenset({task["workspace_id"]}))
        raise AssertionError(kind)

    # -- pipelines and models ------------------------------------------------------
    def _infer(self, params: dict[str, str]) -> Target:
        try:
            if "deploy_name" in params:
                name, _ = self.resolve_infer(params["deploy_name"], params.get("pipeline_name"))
            else:
                name = params["pipeline_name"]
        except WallarooError:
            return MISSING
        owners = self._pipeline_workspaces(name)
        return Target(owners, name, missing=not owners)

    def _pipeline(self, body: dict[str, Any], name_field: str | None) -> Target:
        pid: Any = body.get("pipeline_id")
        name = body.get(name_field) if name_field else None
        if isinstance(pid, str) and name_field == "name" and not pid.isdigit():
            pid, name = None, pid  # /pipelines/get takes a name in pipeline_id
        if pid is not None:
            row = self.db.one("SELECT workspace_id, name FROM pipelines WHERE id = ?",
                              (integer({"pipeline_id": pid}, "pipeline_id"),))
            return MISSING if row is None else Target(frozenset({row["workspace_id"]}), row["name"])
        if isinstance(name, str):
            return Target(frozenset({integer(body, "workspace_id", 1) or 1}), name)
        deployment_id = integer(body, "deployment_id")
        if deployment_id is not None:  # undeploy by the deployment's id alone
            row = self.db.one("SELECT p.workspace_id, p.name FROM deployments d JOIN pipelines p ON p.id = d.pipeline_id "
                              "WHERE d.id = ?", (deployment_id,))
            return MISSING if row is None else Target(frozenset({row["workspace_id"]}), row["name"])
        return MISSING  # the route answers that it needs one of them

    def _new_pipeline(self, body: dict[str, Any]) -> Target:
        """The pipeline's workspace, and the workspaces of model versions its steps name by id."""
        owners = {integer(body, "workspace_id", 1) or 1}
        definition = body.get("definition")
        steps = definition.get("steps") if isinstance(definition, dict) else None
        for step in steps if isinstance(steps, list) else ():
            inference = step.get("ModelInference") if isinstance(step, dict) else None
            models = inference.get("models") if isinstance(inference, dict) else None
            for model in models if isinstance(models, list) else ():
                version_id = integer(model, "model_version_id") if isinstance(model, dict) else None
                if version_id is not None:
                    owners |= self._model_version(version_id).workspaces or set()
        return Target(frozenset(owners))

    def _model(self, body: dict[str, Any]) -> Target:
        """By `models_pk_id`, else by name (Wallaroo's `model_id`) in `workspace_id` (default 1)."""
        models_pk_id = integer(body, "models_pk_id")
        if models_pk_id is not None:
            row = self.db.one("SELECT workspace_id FROM models WHERE id = ?", (models_pk_id,))
            return MISSING if row is None else Target(frozenset({row["workspace_id"]}))
        return Target(frozenset({integer(body, "workspace_id", 1) or 1}))

    def _model_version(self, version_id: int | None) -> Target:
        row = None if version_id is None else self.db.one(
            "SELECT m.workspace_id FROM model_versions mv JOIN models m ON m.id = mv.model_id WHERE mv.id = ?",
            (version_id,))
        return MISSING if row is None else Target(frozenset({row["workspace_id"]}))

    def _pipeline_workspaces(self, name: str) -> frozenset[int]:
        return frozenset(r["workspace_id"] for r in self.db.all("SELECT workspace_id FROM pipelines WHERE name = ?", (name,)))

    # -- logs and listeners --------------------------------------------------------
    def logs_of(self, name: str, scores: bool = False) -> Target:
        """Logs are kept by pipeline name: whose are they? A pipeline's, a listener's score
        pipeline's (its task's workspace), or nobody's (a deleted pipeline's). With `scores`, the
        request also reads the score pipelines of the tasks monitoring `name`."""
        owners = set(self._pipeline_workspaces(name))
        pipeline = name
        for task in self._tasks():
            args = json.loads(task["args"] or "{}")
            listener = json.loads(task["listener_model"] or "{}").get("name", "")
            score_pipeline = args.get("output_pipeline") or score_pipeline_name(task["monitored_pipeline"], listener)
            if name == score_pipeline or (scores and name == task["monitored_pipeline"]):
                owners.add(task["workspace_id"])
                pipeline = task["monitored_pipeline"]
        if owners:
            return Target(frozenset(owners), pipeline)
        exists = name in set(self.log_names())
        return Target(frozenset({UNOWNED}) if exists else frozenset(), name, missing=not exists)

    def _with_monitored(self, owners: frozenset[int], body: dict[str, Any]) -> Target:
        """A task's workspace, plus the owners of the logs its `json` would have it read."""
        args = body.get("json")
        monitored = args.get("monitored_pipeline") if isinstance(args, dict) else None
        if not isinstance(monitored, str):
            return Target(owners)
        found = self.logs_of(monitored)
        return Target(owners | (found.workspaces or frozenset()), monitored)

    def _task(self, task_id: Any) -> dict[str, Any] | None:
        return self._listener_row("SELECT * FROM listener_tasks WHERE id = ?", task_id)

    def _tasks(self) -> list[dict[str, Any]]:
        try:
            return self.db.all("SELECT workspace_id, monitored_pipeline, listener_model, args FROM listener_tasks")
        except OperationalError:  # listeners disabled: no table
            return []

    def _listener_row(self, sql: str, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, str):
            return None  # the route answers its 400
        try:
            return self.db.one(sql, (value,))
        except OperationalError:
            return None
