"""The client's pipelines API: create, read, delete, deploy, undeploy, deployment status and waiting; mixed into `WallarooClient`."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import pydantic

from wallaroo_pulumi import engine_config as ec
from wallaroo_pulumi.client import wire
from wallaroo_pulumi.client._shared import (
    ClientArea,
    DeployProgress,
    definition_step,
    step_dict,
)
from wallaroo_pulumi.client.errors import (
    DeploymentError,
    NotFoundError,
    ValidationError,
)
from wallaroo_pulumi.client.models import (
    CreatedPipeline,
    DeploymentStatus,
    ModelRef,
    ModelVersion,
    Pipeline,
)
from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.guardrails import Guardrails


class PipelinesAPI(ClientArea):
    """Mixed into `WallarooClient`; `get_pipeline` and `deployment_status` are its own."""

    def create_pipeline(
        self,
        name: str,
        steps: Sequence[ModelRef | ModelVersion | dict[str, Any]],
        workspace_id: int | None = None,
    ) -> CreatedPipeline:
        """Create the pipeline or a new version of it (an identical definition returns the current one).
        A step is a model, or a step in Wallaroo's form (`{"RandomSplit": {...}}`, `{"Fallback": {...}}`, ...)."""
        payload = {
            "pipeline_id": name,
            "workspace_id": workspace_id or 1,
            "definition": {"steps": [definition_step(s) for s in steps]},
        }
        return CreatedPipeline.model_validate(self._post("/v1/api/pipelines/create", payload, f"create pipeline {name!r}"))

    def _pipelines(self, where: dict[str, Any], context: str) -> list[Pipeline]:
        out = []
        for node in self._graphql(wire.PIPELINES_QUERY, {"where": where}, context)["pipeline"]:
            dep = node.get("deployment") or {}
            status = None
            if dep.get("deployed"):
                try:
                    status = self.deployment_status(f"{node['pipeline_id']}-{dep['id']}")
                except NotFoundError:
                    pass  # deployed, but not serving yet
            pipeline = wire.pipeline(node, status)
            if pipeline.deployment_id is not None:
                self._deployment_ids[pipeline.name] = pipeline.deployment_id
            out.append(pipeline)
        return out

    def get_pipeline(self, name_or_id: str | int, workspace_id: int | None = None) -> Pipeline:
        """A pipeline by id, or by name in `workspace_id` (default 1): its current version and steps,
        its deployment and that deployment's status."""
        if isinstance(name_or_id, int):
            where: dict[str, Any] = {"id": {"_eq": name_or_id}}
        else:
            where = {"pipeline_id": {"_eq": name_or_id}, "workspace_id": {"_eq": workspace_id or 1}}
        found = self._pipelines(where, f"pipeline {name_or_id!r}")
        if not found:
            raise NotFoundError(f"pipeline {name_or_id!r}: no such pipeline"
                                + ("" if isinstance(name_or_id, int) else f" in workspace {workspace_id or 1}"))
        return found[0]

    def list_pipelines(self, workspace_id: int | None = None) -> list[Pipeline]:
        return self._pipelines({"workspace_id": {"_eq": workspace_id}} if workspace_id else {}, "list pipelines")

    def delete_pipeline(self, pipeline: int | str, workspace_id: int | None = None) -> None:
        """Undeploy (if deployed) and delete. Inference logs are kept."""
        if isinstance(pipeline, int):
            found = self.get_pipeline(pipeline)
            pipeline, workspace_id = found.name, found.workspace_id
        self._post("/v1/api/pipelines/delete_pipeline", {"pipeline_id": pipeline, "workspace_id": workspace_id or 1},
                   f"delete pipeline {pipeline!r}")

    def set_guardrails(self, pipeline: str, guardrails: Guardrails | dict[str, Any] | None,
                       workspace_id: int | None = None) -> Guardrails | None:
        """Replace a pipeline's guardrail policies (None: none); the next call of its deployment uses them."""
        spec = guardrails.model_dump(mode="json") if isinstance(guardrails, Guardrails) else guardrails
        got = self._post("/v1/api/pipelines/set_guardrails",
                         {"pipeline_id": pipeline, "workspace_id": workspace_id or 1, "guardrails": spec},
                         f"set the guardrails of pipeline {pipeline!r}")
        return Guardrails.model_validate(got["guardrails"]) if got.get("guardrails") else None

    def get_guardrails(self, pipeline: str, workspace_id: int | None = None) -> Guardrails | None:
        got = self._post("/v1/api/pipelines/get_guardrails", {"pipeline_id": pipeline, "workspace_id": workspace_id or 1},
                         f"get the guardrails of pipeline {pipeline!r}")
        return Guardrails.model_validate(got["guardrails"]) if got.get("guardrails") else None

    def deploy(
        self,
        pipeline_name: str,
        *,
        pipeline_id: int | None = None,
        pipeline_version_pk_id: int | None = None,
        engine_config: Any = None,
        models: Sequence[ModelRef | ModelVersion | dict[str, Any]] | None = None,
    ) -> int:
        """Start (or restart with a new version / config) the deployment; returns its id.
        It comes up in the background: follow it with `wait_for_deployment`.

        `engine_config`: Wallaroo's nested form (`DeploymentConfigBuilder().build()`), sent as is, or
        our `DeploymentConfig` (or its dict), sent in the nested form with each sidekick keyed by its
        model version ('<model>-<model version id>', from `models` or the pipeline version's steps)."""
        if engine_config is None or not ec.is_engine_config(engine_config):
            try:
                config = DeploymentConfig.model_validate(engine_config or {})
            except pydantic.ValidationError as exc:
                problems = "; ".join(".".join(["engine_config", *map(str, e["loc"])]) + ": "
                                     + e["msg"].removeprefix("Value error, ") for e in exc.errors())
                raise ValidationError(f"deploy pipeline {pipeline_name!r}: {problems}") from None
            keys = self._image_keys(list(config.sidekicks), pipeline_name, pipeline_version_pk_id, models)
            engine_config = ec.from_config(config, keys.__getitem__)
        payload: dict[str, Any] = {"deploy_id": pipeline_name, "engine_config": engine_config}
        if pipeline_id is not None:
            payload["pipeline_id"] = pipeline_id
        if pipeline_version_pk_id is not None:
            payload["pipeline_version_pk_id"] = pipeline_version_pk_id
        if models is not None:
            payload["models"] = [{k: v for k, v in step_dict(m).items() if k in ("name", "version", "sha")}
                                 for m in models]
        data = self._post("/v1/api/pipelines/deploy", payload, f"deploy pipeline {pipeline_name!r}")
        self._deployment_ids[pipeline_name] = int(data["id"])
        return int(data["id"])

    def _image_keys(self, names: list[str], pipeline_name: str, version_pk_id: int | None,
                    models: Sequence[ModelRef | ModelVersion | dict[str, Any]] | None) -> dict[str, str]:
        """'<model>-<model version id>' of each named model: from `models`, else the version's steps;
        the bare name of a model the version holds several versions of, and a key already
        '<model>-<model version id>' as it is (D47)."""
        if not names:
            return {}
        refs = [step_dict(m) for m in models or ()]
        if not refs or any(r.get("model_version_id") is None for r in refs if r.get("name") in names):
            if version_pk_id is None:
                version_pk_id = self.get_pipeline(pipeline_name).pipeline_version_pk_id
            found = self._graphql(wire.VERSION_DEFINITION_QUERY, {"id": version_pk_id}, f"pipeline version {version_pk_id}")
            refs = wire.model_refs((found["pipeline_version_by_pk"] or {}).get("definition"))
        ref_names = {r["name"] for r in refs}
        keys = {n: n for n in names if n not in ref_names  # '<model>-<model version id>': that version's own
                and any(re.fullmatch(re.escape(r) + r"-\d+", n) for r in ref_names)}
        several = {n for n in names if sum(r["name"] == n for r in refs) > 1}  # versions of one model: its name
        keys.update({n: n for n in several})  # keys them all (a '<model>-<id>' key would configure that version only)
        for ref in refs:
            if ref["name"] in names and ref["name"] not in several:
                version_id = ref.get("model_version_id")
                if version_id is None:
                    where = {"model_id": {"_eq": ref["name"]}, "model_version": {"_eq": ref["version"]}}
                    rows = self._graphql(wire.MODEL_VERSIONS_QUERY, {"where": where}, f"model {ref['name']!r}")["model"]
                    version_id = rows[0]["id"] if rows else None
                if version_id is not None:
                    keys[ref["name"]] = ec.image_key(ref["name"], version_id)
        missing = sorted(set(names) - set(keys))
        if missing:
            raise ValidationError(f"deploy pipeline {pipeline_name!r}: engine_config.sidekicks names "
                                  f"{', '.join(map(repr, missing))}, not a model of this pipeline version")
        return keys

    def undeploy(self, pipeline: int | str, deployment_id: int | None = None) -> None:
        if isinstance(pipeline, str):
            found = self.get_pipeline(pipeline)
            pipeline, deployment_id = found.pipeline_id, deployment_id or found.deployment_id
        payload: dict[str, Any] = {"pipeline_id": pipeline}
        if deployment_id is not None:
            payload["deployment_id"] = deployment_id
        self._post("/v1/api/pipelines/undeploy", payload, f"undeploy pipeline {pipeline!r}")

    def deployment_status(self, name: str) -> DeploymentStatus:
        """`name` is `<pipeline>-<deployment id>` (as Wallaroo) or just the pipeline name."""
        data = self._post("/v1/api/status/get_deployment", {"name": name}, f"deployment {name!r}")
        return wire.deployment_status({"name": name, **data})

    def wait_for_deployment(
        self,
        name: str,
        timeout_s: float = 300.0,
        progress: DeployProgress | None = None,
        poll_s: float = 0.25,
    ) -> str:
        """Poll until Running (returned) or Error (raises `DeploymentError` with the sidekick's reason)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            status = self.deployment_status(name)
            summary = status.status
            if status.sidekicks:
                summary += " (" + ", ".join(f"{s.name}: {s.status}" for s in status.sidekicks) + ")"
            if progress and summary != last:
                progress(summary)
            last = summary
            if status.status == "Running":
                return status.status
            if status.status == "Error":
                reasons = [f"{s.name}: {s.reason}" for s in status.sidekicks if s.reason]
                reason = status.reason or "; ".join(reasons) or "no reason given"
                raise DeploymentError(f"deployment {name} failed: {reason}", body=status.model_dump())
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"deployment {name} not Running after {timeout_s:.0f}s (last status: {summary})",
                    body=status.model_dump(),
                )
            time.sleep(poll_s)
