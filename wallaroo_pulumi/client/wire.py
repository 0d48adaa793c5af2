"""Wallaroo's answers (the MLOps API as the SDK's generated client defines it, and the GraphQL
the SDK queries) read into our models; the same calls work against a real Wallaroo (D33)."""

from __future__ import annotations

from typing import Any

from wallaroo_pulumi import engine_config
from wallaroo_pulumi.client.models import DeploymentStatus, Model, ModelVersion, Pipeline
from wallaroo_pulumi.deployment import DeploymentConfig

PIPELINES_QUERY = """
query WallarooPulumiPipelines($where: pipeline_bool_exp!) {
  pipeline(where: $where, order_by: {id: asc}) {
    id
    pipeline_id
    workspace_id
    created_at
    pipeline_versions(order_by: {id: desc}) { id version definition created_at }
    deployment { id deploy_id deployed engine_config }
  }
}
"""

MODEL_VERSIONS_QUERY = """
query WallarooPulumiModelVersions($where: model_bool_exp!) {
  model(where: $where, order_by: {id: asc}) { id model_id model_version models_pk_id sha }
}
"""

VERSION_DEFINITION_QUERY = """
query WallarooPulumiPipelineVersion($id: bigint!) {
  pipeline_version_by_pk(id: $id) { id version definition }
}
"""


def model_version(configured: dict[str, Any], models_pk_id: int | None = None) -> ModelVersion:
    """`models/get_model_version_by_id`'s `model_version` (or a `models/list` version)."""
    mv, config = configured["model_version"], configured.get("config") or {}
    info = mv["file_info"]
    return ModelVersion.model_validate({
        "id": mv.get("id") if mv.get("id") is not None else config.get("model_version_id"),
        "model_id": mv.get("model_id", models_pk_id), "name": mv["name"], "version": info["version"],
        "sha": info["sha"], "file_name": info["file_name"], "file_size": info["size"],
        "created_at": mv.get("created_at"), "status": mv["status"], "workspace_id": mv["workspace_id"],
        "visibility": mv["visibility"], "conversion": mv.get("conversion") or {},
        "input_schema": config.get("input_schema") or mv.get("input_schema"),
        "output_schema": config.get("output_schema") or mv.get("output_schema"),
    })


def model(item: dict[str, Any]) -> Model:
    """A `models/list` item."""
    m = item["model"]
    versions = [model_version(v, m["id"]) for v in item.get("model_versions") or []]
    return Model.model_validate({
        "id": m["id"], "name": m["name"], "workspace_id": m["workspace_id"], "created_at": m.get("created_at"),
        "versions": len(versions), "latest_version": versions[-1] if versions else None,
    })


STEP_KINDS = ("ModelInference", "RandomSplit", "MetaValueSplit", "AuditResults", "MultiOut", "Fallback")


def refs_in(step: dict[str, Any]) -> list[dict[str, Any]]:
    """The model refs inside one `steps` item (a model ref, or a definition step)."""
    kind = next(iter(step), None) if len(step) == 1 else None
    if kind not in STEP_KINDS:
        return [step]
    body = step[kind] or {}
    if kind == "RandomSplit":
        return [w.get("model") or {} for w in body.get("weights") or []]
    if kind == "MetaValueSplit":
        return [body.get("control") or {}, *(body.get("routes") or {}).values()]
    return list(body.get("models") or [])


def steps(definition: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each step of a pipeline definition: a one-model step as its model, any other step as written."""
    out = []
    for s in (definition or {}).get("steps") or []:
        models = (s.get("ModelInference") or {}).get("models") or []
        out.append(models[0] if len(s) == 1 and len(models) == 1 else s)
    return out


def model_refs(definition: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every model a pipeline definition names (each step's, a split's, a shadow's, a fallback's)."""
    return [ref for s in steps(definition) for ref in refs_in(s)]


def our_config(wire: dict[str, Any] | None, step_names: list[str]) -> dict[str, Any] | None:
    """A deployment's nested engine_config as our flat settings (env values stay hidden), or None
    when it holds settings our `DeploymentConfig` does not have."""
    if not wire:
        return None
    try:
        versions = engine_config.versions_named(wire, step_names)
        flat = engine_config.to_flat(wire, engine_config.model_resolver(step_names, versions))
        return DeploymentConfig.model_validate(flat).redacted()
    except ValueError:
        return None


def pipeline(node: dict[str, Any], status: DeploymentStatus | None) -> Pipeline:
    """A GraphQL `pipeline` (PIPELINES_QUERY) and its deployment's status."""
    versions = node.get("pipeline_versions") or []
    current = versions[0] if versions else None
    dep = node.get("deployment") or None
    deployed = bool(dep and dep.get("deployed"))
    step_refs = steps(current["definition"]) if current else []
    names = [r.get("name") for r in model_refs(current["definition"])] if current else []
    name = node["pipeline_id"]
    return Pipeline.model_validate({
        "pipeline_id": node["id"], "name": name, "workspace_id": node.get("workspace_id") or 1,
        "created_at": node.get("created_at"),
        "pipeline_version_pk_id": current["id"] if current else None, "version": current["version"] if current else None,
        "steps": step_refs, "deployment_id": dep["id"] if dep else None, "deployed": deployed,
        "status": (status.status if status else "Starting") if deployed else "undeployed",
        "reason": status.reason if status and deployed else None,
        "engine_config": our_config(dep.get("engine_config"), names) if dep else None,
        "inference_path": f"/v1/api/pipelines/infer/{name}-{dep['id']}/{name}" if deployed else None,
    })


def deployment_status(data: dict[str, Any]) -> DeploymentStatus:
    """`status/get_deployment`: each engine, balancer and sidekick is an `info` entry."""
    def info(item: dict[str, Any]) -> dict[str, Any]:
        entry = dict(item.get("info") or item)
        return {**entry, "status": entry.get("health") or entry.get("status")}

    return DeploymentStatus.model_validate({
        **data, "engines": [info(e) for e in data.get("engines") or []],
        "engine_lbs": [info(e) for e in data.get("engine_lbs") or []],
        "sidekicks": [info(s) for s in data.get("sidekicks") or []],
    })
