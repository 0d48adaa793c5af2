"""The published pipeline in the image (publish.json + model artifacts) made this edge's own: its
models registered, the pipeline version created and deployed, each step's credentials taken from
the edge's environment (none are in the image)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wallaroo_pulumi import engine_config
from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.runtime.core.errors import BadRequest
from wallaroo_pulumi.runtime.services.deployments import Deployments
from wallaroo_pulumi.runtime.services.pipelines import Pipelines
from wallaroo_pulumi.runtime.services.registry import Registry
from wallaroo_pulumi.runtime.store.artifacts import ArtifactStore

log = logging.getLogger("wallaroo_pulumi.runtime.edge")
_CHUNK = 1 << 20


def read_publish(publish_dir: Path) -> dict[str, Any]:
    path = publish_dir / "publish.json"
    if not path.is_file():
        raise BadRequest(f"{path} is missing: `runtime edge` runs in an image made by pipelines/publish")
    return json.loads(path.read_text())


def edge_config(stored: dict[str, Any], environ: Mapping[str, str]) -> DeploymentConfig:
    """The published config with each step's env values from the edge's own environment."""
    missing = []
    for model, side in stored.get("sidekicks", {}).items():
        for name in side.get("env", {}):
            if name in environ:
                side["env"][name] = environ[name]
            else:
                missing.append(f"{name} (model {model})")
    if missing:
        raise BadRequest(f"the published pipeline's steps need {', '.join(missing)} from this edge's environment "
                         "(credentials never travel in the image): start the container with -e NAME=value for each")
    return DeploymentConfig.model_validate(stored)


def local_refs(value: Any, ids: dict[tuple[str, str], int]) -> Any:
    """The published definition's steps (splits, shadows, checks as they were) with each model
    ref naming the version registered here."""
    if isinstance(value, dict) and (value.get("name"), value.get("sha")) in ids:
        return {"name": value["name"], "model_version_id": ids[(value["name"], value["sha"])]}
    if isinstance(value, dict):
        return {k: local_refs(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [local_refs(v, ids) for v in value]
    return value


def local_keys(config: DeploymentConfig, models: list[dict[str, Any]], ids: dict[tuple[str, str], int]) -> DeploymentConfig:
    """The config with each per-version sidekick key ('<name>-<version id at the centre>') naming
    the version registered here, so two versions of one model keep their own settings (D47)."""
    here = {engine_config.image_key(m["name"], m["model_version_id"]): engine_config.image_key(m["name"], ids[(m["name"], m["sha"])])
            for m in models if m.get("model_version_id") is not None}
    return config.model_copy(update={"sidekicks": {here.get(k, k): v for k, v in config.sidekicks.items()}})


async def import_publish(manifest: dict[str, Any], publish_dir: Path, registry: Registry, artifacts: ArtifactStore,
                         pipelines: Pipelines, deployments: Deployments, max_upload_bytes: int) -> int:
    """Register, create and deploy the published pipeline here; its deployment id."""
    config = edge_config(json.loads(json.dumps(manifest["engine_config"])), os.environ)
    ids: dict[tuple[str, str], int] = {}
    for model in manifest["models"]:
        writer = artifacts.writer(max_upload_bytes)
        with (publish_dir / "models" / model["sha"]).open("rb") as f:
            for chunk in iter(lambda f=f: f.read(_CHUNK), b""):
                writer.write(chunk)
        version_id = await registry.add_version(
            workspace_id=1, name=model["name"], visibility="private", conversion=model["conversion"],
            input_schema=model["input_schema"], output_schema=model["output_schema"], writer=writer,
            file_name=model["file_name"])
        ids[(model["name"], model["sha"])] = version_id
    created = pipelines.create(manifest["pipeline"], 1, local_refs(manifest["definition"]["steps"], ids))
    # named as at the centre, so the rows it logs carry the published version's name
    pipelines.rename_version(created["pipeline_variant_pk_id"], manifest["pipeline_version"])
    pipeline = pipelines.find(created["pipeline_pk_id"])
    wire = engine_config.from_config(local_keys(config, manifest["models"], ids), lambda name: name)
    dep_id = await deployments.deploy(pipeline, created["pipeline_variant_pk_id"], wire)
    log.info("edge: pipeline %s (published version %s, publish %s) deployed here as %s-%d", manifest["pipeline"],
             manifest["pipeline_version"], manifest["publish_id"], manifest["pipeline"], dep_id)
    return dep_id
