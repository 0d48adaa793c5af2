"""The registry: workspaces, models, their content-addressed versions, and model references."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from wallaroo_pulumi.runtime.artifacts import ArtifactStore, ArtifactWriter, validate_byop_zip
from wallaroo_pulumi.runtime.db import Database
from wallaroo_pulumi.runtime.errors import BadRequest, Conflict, NotFound

_VERSION_SELECT = (
    "SELECT mv.*, m.name AS name, m.workspace_id AS workspace_id, m.visibility AS visibility "
    "FROM model_versions mv JOIN models m ON m.id = mv.model_id WHERE "
)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def workspace_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "created_at": iso(row["created_at"])}


def version_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "model_id": row["model_id"],
        "name": row["name"],
        "version": row["version"],
        "sha": row["sha"],
        "file_name": row["file_name"],
        "file_size": row["file_size"],
        "created_at": iso(row["created_at"]),
        "input_schema": row["input_schema"],
        "output_schema": row["output_schema"],
        "conversion": json.loads(row["conversion"]),
        "status": row["status"],
        "workspace_id": row["workspace_id"],
        "visibility": row["visibility"],
    }


class Registry:
    def __init__(self, db: Database, artifacts: ArtifactStore, models_dir: Path) -> None:
        self.db = db
        self.artifacts = artifacts
        self.models_dir = models_dir

    # -- workspaces --------------------------------------------------------
    def workspaces(self) -> list[dict[str, Any]]:
        return [workspace_json(r) for r in self.db.all("SELECT * FROM workspaces ORDER BY id")]

    def create_workspace(self, name: str) -> dict[str, Any]:
        try:
            with self.db.tx() as c:
                wid = c.execute("INSERT INTO workspaces (name, created_at) VALUES (?, ?)", (name, time.time())).lastrowid
        except sqlite3.IntegrityError:
            raise Conflict(f"workspace_name: a workspace named {name!r} already exists") from None
        row = self.db.one("SELECT * FROM workspaces WHERE id = ?", (wid,))
        assert row is not None
        return {"workspace_id": wid, "workspace": workspace_json(row)}

    def require_workspace(self, workspace_id: int) -> None:
        if self.db.one("SELECT id FROM workspaces WHERE id = ?", (workspace_id,)) is None:
            raise NotFound(f"workspace_id: no workspace with id {workspace_id} (list them with /v1/api/workspaces/list)")

    # -- models and versions ----------------------------------------------
    async def add_version(
        self, *, workspace_id: int, name: str, visibility: str, conversion: dict[str, Any],
        input_schema: str, output_schema: str, writer: ArtifactWriter, file_name: str | None,
    ) -> int:
        """Validate and commit an uploaded zip, then record it; the same content is the same version."""
        try:
            self.require_workspace(workspace_id)
            if writer.size == 0:
                raise BadRequest("file: the uploaded file is empty")
            try:
                await anyio.to_thread.run_sync(validate_byop_zip, writer.tmp_path)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            sha, _path = await anyio.to_thread.run_sync(writer.commit)
        except BaseException:
            writer.abort()
            raise
        now = time.time()
        with self.db.tx() as c:
            model = c.execute("SELECT id FROM models WHERE workspace_id = ? AND name = ?", (workspace_id, name)).fetchone()
            if model is None:
                model_id = c.execute(
                    "INSERT INTO models (workspace_id, name, visibility, created_at) VALUES (?, ?, ?, ?)",
                    (workspace_id, name, visibility, now),
                ).lastrowid
            else:
                model_id = model["id"]
            existing = c.execute("SELECT id FROM model_versions WHERE model_id = ? AND sha = ?", (model_id, sha)).fetchone()
            if existing is not None:
                return existing["id"]
            return c.execute(
                "INSERT INTO model_versions (model_id, version, sha, file_name, file_size, input_schema, "
                "output_schema, conversion, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ready', ?)",
                (model_id, str(uuid.uuid4()), sha, file_name or f"{name}.zip", writer.size,
                 input_schema, output_schema, json.dumps(conversion), now),
            ).lastrowid

    def version_row(self, where: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        return self.db.one(_VERSION_SELECT + where, params)

    def version_rows(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        return self.db.all(_VERSION_SELECT + where + " ORDER BY mv.id", params)

    def models(self, workspace_id: int | None) -> list[dict[str, Any]]:
        where, params = ("1=1", ()) if workspace_id is None else ("workspace_id = ?", (workspace_id,))
        out = []
        for m in self.db.all(f"SELECT * FROM models WHERE {where} ORDER BY id", params):
            versions = self.version_rows("mv.model_id = ?", (m["id"],))
            out.append({
                "id": m["id"], "name": m["name"], "workspace_id": m["workspace_id"], "visibility": m["visibility"],
                "created_at": iso(m["created_at"]), "versions": len(versions),
                "latest_version": version_json(versions[-1]) if versions else None,
            })
        return out

    def versions(self, model_id: int | None, name: str | None, workspace_id: int | None) -> list[dict[str, Any]]:
        if model_id is not None:
            model = self.db.one("SELECT id FROM models WHERE id = ?", (model_id,))
            label = f"id {model_id}"
        else:
            model = self.db.one("SELECT id FROM models WHERE name = ? AND workspace_id = ?", (name, workspace_id or 1))
            label = f"name {name!r}"
        if model is None:
            raise NotFound(f"no model with {label}")
        return [version_json(r) for r in self.version_rows("mv.model_id = ?", (model["id"],))]

    def version(self, model_version_id: int) -> dict[str, Any]:
        row = self.version_row("mv.id = ?", (model_version_id,))
        if row is None:
            raise NotFound(f"model_version_id: no model version with id {model_version_id}")
        return version_json(row)

    def deployed_users(self, model_name: str, workspace_id: int) -> list[str]:
        """Names of deployed pipelines whose deployed version uses a model of this name."""
        users = set()
        rows = self.db.all(
            "SELECT p.name, pv.definition FROM deployments d JOIN pipelines p ON p.id = d.pipeline_id "
            "JOIN pipeline_versions pv ON pv.id = d.pipeline_version_id WHERE d.desired = 'deployed' AND p.workspace_id = ?",
            (workspace_id,),
        )
        for row in rows:
            for step in json.loads(row["definition"]).get("steps", []):
                if any(m.get("name") == model_name for m in step.get("ModelInference", {}).get("models", [])):
                    users.add(row["name"])
        return sorted(users)

    def delete_model(self, model_id: int) -> dict[str, Any]:
        model = self.db.one("SELECT * FROM models WHERE id = ?", (model_id,))
        if model is None:
            raise NotFound(f"model_id: no model with id {model_id}")
        users = self.deployed_users(model["name"], model["workspace_id"])
        if users:
            raise Conflict(f"model {model['name']!r} is used by deployed pipeline(s) {', '.join(users)}; undeploy them first")
        shas = [r["sha"] for r in self.db.all("SELECT sha FROM model_versions WHERE model_id = ?", (model_id,))]
        with self.db.tx() as c:
            c.execute("DELETE FROM model_versions WHERE model_id = ?", (model_id,))
            c.execute("DELETE FROM models WHERE id = ?", (model_id,))
        for sha in set(shas):
            if self.db.one("SELECT id FROM model_versions WHERE sha = ?", (sha,)) is None:
                self.artifacts.delete(sha)
                shutil.rmtree(self.models_dir / sha, ignore_errors=True)
        return {"deleted": True, "model_id": model_id, "versions": len(shas)}

    def resolve_ref(self, ref: dict[str, Any], workspace_id: int, where: str) -> dict[str, Any]:
        """A {name, version?, sha?, model_version_id?} step model -> its version row (latest when unspecified)."""
        name = ref.get("name")
        if ref.get("model_version_id") is not None:
            row = self.version_row("mv.id = ?", (ref["model_version_id"],))
            if row is None or (name and row["name"] != name):
                raise BadRequest(f"{where}.model_version_id: no version {ref['model_version_id']} of model {name!r}")
            return row
        if not name:
            raise BadRequest(f"{where}.name: required")
        clauses, params = ["m.name = ?", "m.workspace_id = ?"], [name, workspace_id]
        for key, column in (("version", "mv.version"), ("sha", "mv.sha")):
            if ref.get(key):
                clauses.append(f"{column} = ?")
                params.append(ref[key])
        rows = self.version_rows(" AND ".join(clauses), tuple(params))
        if not rows:
            detail = ", ".join(f"{k} {ref[k]!r}" for k in ("version", "sha") if ref.get(k))
            raise BadRequest(
                f"{where}: no model {name!r}" + (f" with {detail}" if detail else "") + f" in workspace {workspace_id}; upload it first"
            )
        return rows[-1]

    def latest_version(self, workspace_id: int, name: str, version: str | None) -> dict[str, Any] | None:
        """The newest version of a model by name (or the given version), for listener models."""
        where, params = "m.workspace_id = ? AND m.name = ?", (workspace_id, name)
        if version:
            where, params = where + " AND mv.version = ?", (*params, version)
        rows = self.version_rows(where, params)
        return rows[-1] if rows else None
