"""Pipelines and their versions: ordered steps (model, split, shadow, fallback), their models
resolved against the registry."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pyarrow as pa

from wallaroo_pulumi.runtime.core.errors import BadRequest, NotFound
from wallaroo_pulumi.runtime.services.registry import Registry
from wallaroo_pulumi.runtime.store.db import Database, dumps
from wallaroo_pulumi.runtime.wire.steps import check_steps, model_refs, parse_steps
from wallaroo_pulumi.runtime.wire.validations import Validation, compile_check
from wallaroo_pulumi.schemas import schema_from_b64


def step_refs(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """Every model of a stored definition, stage by stage (each runs in its own sidekick)."""
    return model_refs(definition["steps"])


def validations_of(definition: dict[str, Any], first_input: pa.Schema, last_output: pa.Schema) -> list[Validation]:
    """The validations of a definition's Check steps, over the pipeline's in.* and its answer's out.* columns."""
    columns = {f"in.{f.name}": f.type for f in first_input} | {f"out.{f.name}": f.type for f in last_output}
    taken: set[str] = set()
    return [v for i, s in enumerate(definition["steps"]) if "Check" in s
            for v in compile_check(s["Check"].get("tree"), i, columns, taken)]


class Pipelines:
    def __init__(self, db: Database, registry: Registry) -> None:
        self.db = db
        self.registry = registry
        # by pipeline version (id, uuid): a version never changes, and a deleted one's id may come back
        self._validations: dict[tuple[int, str], list[Validation]] = {}

    def create(self, name: str, workspace_id: int, raw_steps: list[Any]) -> dict[str, Any]:
        """A new version when the resolved steps differ from the current one; the same version otherwise."""
        self.registry.require_workspace(workspace_id)
        steps: list[dict[str, Any]] = []
        first: dict[str, Any] | None = None
        last: dict[str, Any] | None = None
        for stage in parse_steps(raw_steps):
            rows = [self.registry.resolve_ref(ref.model_dump(exclude_none=True), workspace_id, where)
                    for where, ref in stage.refs]
            first, last = first or rows[0], rows[0]  # a stage's answer has its first model's schema
            steps += stage.wire([{"name": row["name"], "version": row["version"], "sha": row["sha"]} for row in rows])
        checks = [check.wire() for check in check_steps(raw_steps)]
        if checks and (first is None or last is None):
            raise BadRequest("definition.steps: validations need a model step before them")
        steps += checks
        if checks and first is not None and last is not None:  # refused now if the runtime cannot evaluate one
            validations_of({"steps": steps}, schema_from_b64(first["input_schema"], "input_schema"),
                           schema_from_b64(last["output_schema"], "output_schema"))
        text = dumps({"steps": steps})
        now = time.time()
        with self.db.tx() as c:
            p = c.execute("SELECT * FROM pipelines WHERE name = ? AND workspace_id = ?", (name, workspace_id)).fetchone()
            if p is None:
                pid = c.execute(
                    "INSERT INTO pipelines (workspace_id, name, created_at) VALUES (?, ?, ?)", (workspace_id, name, now)
                ).lastrowid
                current = None
            else:
                pid = p["id"]
                current = c.execute("SELECT * FROM pipeline_versions WHERE id = ?", (p["current_version_id"],)).fetchone()
            if current is not None and current["definition"] == text:
                vid, version = current["id"], current["version"]
            else:
                version = str(uuid.uuid4())
                vid = c.execute(
                    "INSERT INTO pipeline_versions (pipeline_id, version, definition, created_at) VALUES (?, ?, ?, ?)",
                    (pid, version, text, now),
                ).lastrowid
                c.execute("UPDATE pipelines SET current_version_id = ? WHERE id = ?", (vid, pid))
        return {"pipeline_pk_id": pid, "pipeline_variant_pk_id": vid, "pipeline_variant_version": version}

    def find(self, pipeline_id: int | None = None, name: str | None = None, workspace_id: int | None = None) -> dict[str, Any]:
        if pipeline_id is not None:
            row = self.db.one("SELECT * FROM pipelines WHERE id = ?", (pipeline_id,))
            if row is None:
                raise NotFound(f"pipeline_id: no pipeline with id {pipeline_id}")
            if name is not None and row["name"] != name:
                raise BadRequest(f"pipeline_id {pipeline_id} is pipeline {row['name']!r}, not {name!r}")
            return row
        if name is None:
            raise BadRequest("pipeline_id or name: one is required")
        row = self.db.one("SELECT * FROM pipelines WHERE name = ? AND workspace_id = ?", (name, workspace_id or 1))
        if row is None:
            raise NotFound(f"no pipeline named {name!r} in workspace {workspace_id or 1}")
        return row

    def for_deploy(self, deploy_id: str, pipeline_id: int | None, version_pk_id: int | None, version_uuid: str | None,
                   workspace_id: int | None) -> tuple[dict[str, Any], int | None]:
        """The pipeline and version a deploy names: by its version (pk id or uuid), else by id, else by
        `deploy_id`, which is the pipeline's name here (a deployment is named after its pipeline)."""
        version = None
        if version_pk_id is not None:
            version = self.version(version_pk_id)
            if version is None:
                raise NotFound(f"pipeline_version_pk_id: no pipeline version with id {version_pk_id}")
        elif version_uuid is not None:
            version = self.db.one("SELECT * FROM pipeline_versions WHERE version = ?", (version_uuid,))
            if version is None:
                raise NotFound(f"pipeline_version: no pipeline version {version_uuid}")
        if version is not None:
            pipeline_id = version["pipeline_id"]
        pipeline = self.find(pipeline_id, None if pipeline_id is not None else deploy_id, workspace_id)
        if pipeline["name"] != deploy_id:
            raise BadRequest(f"deploy_id: {deploy_id!r} must be the pipeline's name ({pipeline['name']!r}): "
                             "a deployment here is named after its pipeline")
        return pipeline, version["id"] if version is not None else None

    def by_name(self, name: str, workspace_id: int | None = None) -> dict[str, Any] | None:
        if workspace_id is None:
            return self.db.one("SELECT * FROM pipelines WHERE name = ?", (name,))
        return self.db.one("SELECT * FROM pipelines WHERE name = ? AND workspace_id = ?", (name, workspace_id))

    def all(self, workspace_id: int | None) -> list[dict[str, Any]]:
        where, params = ("1=1", ()) if workspace_id is None else ("workspace_id = ?", (workspace_id,))
        return self.db.all(f"SELECT * FROM pipelines WHERE {where} ORDER BY id", params)

    def version(self, version_id: int | None) -> dict[str, Any] | None:
        return self.db.one("SELECT * FROM pipeline_versions WHERE id = ?", (version_id,))

    def version_of(self, pipeline: dict[str, Any], version_id: int | None) -> dict[str, Any]:
        """The given version of `pipeline`, or its current one."""
        if version_id is None:
            version = self.version(pipeline["current_version_id"])
            assert version is not None
            return version
        version = self.db.one("SELECT * FROM pipeline_versions WHERE id = ? AND pipeline_id = ?", (version_id, pipeline["id"]))
        if version is None:
            raise NotFound(f"pipeline_version_pk_id: pipeline {pipeline['name']!r} has no version with id {version_id}")
        return version

    def step_views(self, version: dict[str, Any] | None) -> list[dict[str, Any]]:
        if version is None:
            return []
        steps = []
        for ref in step_refs(json.loads(version["definition"])):
            row = self.registry.version_row("m.name = ? AND mv.version = ?", (ref["name"], ref["version"]))
            steps.append({**ref, "model_version_id": row["id"] if row else None})
        return steps

    def steps(self, version: dict[str, Any], workspace_id: int) -> list[dict[str, Any]]:
        """Each step's model version, schemas and requirements, as the engine needs them."""
        rows = []
        for ref in step_refs(json.loads(version["definition"])):
            row = self.registry.version_row(
                "m.name = ? AND m.workspace_id = ? AND mv.version = ?", (ref["name"], workspace_id, ref["version"])
            )
            if row is None:
                raise BadRequest(
                    f"definition: model {ref['name']!r} version {ref['version']} no longer exists; "
                    "create a new pipeline version with an existing model version"
                )
            rows.append({
                "id": row["id"], "name": row["name"], "version": row["version"], "sha": row["sha"],
                "input_schema": schema_from_b64(row["input_schema"], "input_schema"),
                "output_schema": schema_from_b64(row["output_schema"], "output_schema"),
                "requirements": json.loads(row["conversion"]).get("requirements") or [],
                "dynamic_batching": json.loads(row["dynamic_batching_config"] or "null"),
            })
        return rows

    def validations(self, version_id: int, version_uuid: str) -> list[Validation]:
        """The compiled validations of a pipeline version's Check steps (none for most pipelines)."""
        key = (version_id, version_uuid)
        if key not in self._validations:
            version = self.version(version_id)
            definition = json.loads(version["definition"]) if version else {"steps": []}
            found: list[Validation] = []
            if version is not None and any("Check" in s for s in definition["steps"]):
                pipeline = self.find(version["pipeline_id"])
                rows = self.steps(version, pipeline["workspace_id"])
                *before, _ = parse_steps(definition["steps"])  # the answer has its last stage's first model's schema
                last = rows[sum(len(stage.refs) for stage in before)]
                found = validations_of(definition, rows[0]["input_schema"], last["output_schema"])
            self._validations[key] = found
        return self._validations[key]

    def rename_version(self, version_id: int, version: str) -> None:
        """Give a version the uuid it has elsewhere (an edge takes its centre's published one)."""
        with self.db.tx() as c:
            c.execute("UPDATE pipeline_versions SET version = ? WHERE id = ?", (version, version_id))

    def delete(self, pipeline_id: int) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM deployments WHERE pipeline_id = ?", (pipeline_id,))
            c.execute("DELETE FROM pipeline_versions WHERE pipeline_id = ?", (pipeline_id,))
            c.execute("DELETE FROM pipelines WHERE id = ?", (pipeline_id,))

