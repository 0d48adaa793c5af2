"""The MLOps API's answer shapes, as the Wallaroo SDK's generated client defines them (its
`wallaroo_ml_ops_api_client` models: required fields, types, enums), built from our rows (D33)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

PYTHON_VERSIONS = ("3.8", "3.9")  # the generated client's PythonVersion enum
RUNTIME = "flight"  # the model config runtime of a Python (BYOP) model
OWNER = ""  # no users here: owner_id / created_by are empty


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def topic_name(workspace_id: int, pipeline_name: str) -> str:
    """The log topic of a pipeline (`plateau/get_topic_name`, `/v1/logs/topic/{topic}/records`)."""
    return f"workspace-{workspace_id}-pipeline-{pipeline_name}-inference"


TOPIC = re.compile(r"^workspace-(\d+)-pipeline-(.+)-inference(-failures)?$")
"""A topic: (workspace id, pipeline name, '-failures' for the failed inferences' topic)."""


def workspace_item(row: dict[str, Any], model_ids: list[int], pipeline_ids: list[int]) -> dict[str, Any]:
    """`workspaces/list` item."""
    return {"id": row["id"], "name": row["name"], "created_at": iso(row["created_at"]), "created_by": OWNER,
            "archived": False, "models": model_ids, "pipelines": pipeline_ids}


def workspace(row: dict[str, Any]) -> dict[str, Any]:
    """The `Workspace` model."""
    return {"id": row["id"], "name": row["name"], "created_at": iso(row["created_at"]), "created_by": OWNER,
            "archived": False}


def conversion(stored: str) -> dict[str, Any]:
    """The stored conversion, with only values the generated client's enums take."""
    data = json.loads(stored)
    if data.get("python_version") not in PYTHON_VERSIONS:
        data.pop("python_version", None)
    return data


def model_version(row: dict[str, Any]) -> dict[str, Any]:
    """The `ModelVersion` model (a row of `Registry.version_rows`)."""
    return {
        "id": row["id"], "name": row["name"], "workspace_id": row["workspace_id"], "visibility": row["visibility"],
        "status": row["status"], "file_info": {"file_name": row["file_name"], "sha": row["sha"], "size": row["file_size"],
                                                "version": row["version"]},
        "conversion": conversion(row["conversion"]), "created_at": iso(row["created_at"]), "created_by": OWNER,
        "error_summary": None, "image_path": None, "task_id": None,
        # ours, beside the model's fields: the model id and the schemas, as uploaded
        "model_id": row["model_id"], "input_schema": row["input_schema"], "output_schema": row["output_schema"],
    }


def model_config(row: dict[str, Any]) -> dict[str, Any]:
    """The `ModelConfig` model: one config per model version, with the version's id."""
    return {"id": row["id"], "model_version_id": row["id"], "runtime": RUNTIME, "input_schema": row["input_schema"],
            "output_schema": row["output_schema"], "tensor_fields": None, "filter_threshold": None, "batch_config": None,
            "dynamic_batching_config": (None if row.get("dynamic_batching_config") is None
                                        else json.loads(row["dynamic_batching_config"])),
            "continuous_batching_config": None,
            "openai": None if row.get("openai_config") is None else json.loads(row["openai_config"])}


def configured_model_version(row: dict[str, Any]) -> dict[str, Any]:
    """`models/get_model_version_by_id`'s `model_version`, and `models/list`'s versions."""
    return {"model_version": model_version(row), "config": model_config(row)}


def model(row: dict[str, Any], updated_at: float | None) -> dict[str, Any]:
    """The `Model` model (a row of `models`)."""
    return {"id": row["id"], "name": row["name"], "owner_id": OWNER, "workspace_id": row["workspace_id"],
            "created_at": iso(row["created_at"]), "updated_at": iso(updated_at or row["created_at"])}


def version_item(row: dict[str, Any]) -> dict[str, Any]:
    """`models/list_versions` item."""
    return {"id": row["id"], "sha": row["sha"], "models_pk_id": row["model_id"], "model_version": row["version"],
            "owner_id": OWNER, "model_id": row["name"], "file_name": row["file_name"], "image_path": None,
            "status": row["status"]}


def sdk_model_version(row: dict[str, Any]) -> dict[str, Any]:
    """`models/get_version_by_id` (the SDK's upload flow reads it): GraphQL-style field names."""
    conv = json.loads(row["conversion"])
    version = {
        "id": row["id"], "model_id": row["name"], "model_version": row["version"], "models_pk_id": row["model_id"],
        "sha": row["sha"], "status": row["status"], "error_summary": None, "file_name": row["file_name"],
        "image_path": None, "arch": conv.get("arch"), "accel": conv.get("accel"), "updated_at": iso(row["created_at"]),
        "visibility": row["visibility"], "model": {"workspace": {"id": row["workspace_id"]}},
    }
    return {"model_version": {"model_version": version, "config": {**model_config(row), "model": version}}}


def pipeline(row: dict[str, Any], updated_at: float | None) -> dict[str, Any]:
    """The `Pipeline` model (a row of `pipelines`)."""
    return {"id": row["id"], "name": row["name"], "created_at": iso(row["created_at"]),
            "updated_at": iso(updated_at or row["created_at"])}


def replica_bounds(config: dict[str, Any]) -> dict[str, int]:
    """The `Deployment` model of a list item: most replicas and replicas kept warm."""
    replicas = config.get("replica_count") or max(1, config.get("autoscale_min") or 0)
    return {"maximum_replicas": config.get("autoscale_max") or replicas, "prewarmed_replicas": replicas}


# -- deployment status -------------------------------------------------------------------
_HEALTH = {"Starting": "Starting", "Running": "Running", "Error": "Error", "Stopped": "Error"}
_POD = {"Starting": "Pending", "Running": "Running", "Error": "Failed", "Stopped": "Succeeded"}


def _info(item: dict[str, Any], status: str) -> dict[str, Any]:
    """One pod-like entry: `info` {name, status, details, labels, health, ip, reason}, our fields beside."""
    reason = item.get("reason")
    info = {k: v for k, v in item.items() if k not in ("status", "details", "pipeline_statuses", "model_statuses")}
    info.update(status=_POD.get(status, "Unknown"), health=_HEALTH.get(status, "Error"), labels={},
                details=[str(d) for d in item.get("details") or []] or ([reason] if reason else []))
    return info


def deployment_status(raw: dict[str, Any]) -> dict[str, Any]:
    """The engine's status of a deployment as `status/get_deployment` answers it."""
    engines = [{"info": _info(e, e["status"]), "pipeline_statuses": e.get("pipeline_statuses"),
                "model_statuses": e.get("model_statuses")} for e in raw.get("engines", [])]
    return {
        "name": raw["name"], "status": raw["status"], "reason": raw.get("reason"),
        "details": [str(d) for d in raw.get("details") or []], "pipeline_version": raw.get("pipeline_version"),
        "engines": engines,
        "engine_lbs": [{"info": _info(lb, lb["status"])} for lb in raw.get("engine_lbs", [])],
        "sidekicks": [{"info": _info(s, s["status"]), "statuses": None} for s in raw.get("sidekicks", [])],
        "helm": [],
    }
