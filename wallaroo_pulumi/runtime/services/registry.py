"""The registry: workspaces, models, their content-addressed versions, and model references."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from wallaroo_pulumi.runtime.core.errors import BadRequest, Conflict, NotFound
from wallaroo_pulumi.runtime.store.artifacts import ArtifactStore, ArtifactWriter, validate_byop_zip
from wallaroo_pulumi.runtime.store.db import Database, IntegrityError
from wallaroo_pulumi.runtime.wire import answers

_VERSION_SELECT = (
    "SELECT mv.*, m.name AS name, m.workspace_id AS workspace_id, m.visibility AS visibility "
    "FROM model_versions mv JOIN models m ON m.id = mv.model_id WHERE "
)


class Registry:
    def __init__(self, db: Database, artifacts: ArtifactStore, models_dir: Path) -> None:
        self.db = db
        self.artifacts = artifacts
        self.models_dir = models_dir

    # -- workspaces --------------------------------------------------------
    def workspaces(self) -> list[dict[str, Any]]:
        """`workspaces/list` items: each workspace with the ids of its models and pipelines."""
        models, pipelines = self._ids("models"), self._ids("pipelines")
        return [answers.workspace_item(r, models.get(r["id"], []), pipelines.get(r["id"], []))
                for r in self.db.all("SELECT * FROM workspaces ORDER BY id")]

    def _ids(self, table: str) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for row in self.db.all(f"SELECT id, workspace_id FROM {table} ORDER BY id"):
            out.setdefault(row["workspace_id"], []).append(row["id"])
        return out

    def workspace(self, workspace_id: int) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM workspaces WHERE id = ?", (workspace_id,))
        if row is None:
            raise NotFound(f"workspace_id: no workspace with id {workspace_id} (list them with /v1/api/workspaces/list)")
        return row

    def workspace_named(self, name: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM workspaces WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"workspace_name: no workspace named {name!r} (list them with /v1/api/workspaces/list)")
        return row

    def create_workspace(self, name: str) -> dict[str, Any]:
        try:
            with self.db.tx() as c:
                wid = c.execute("INSERT INTO workspaces (name, created_at) VALUES (?, ?)", (name, time.time())).lastrowid
        except IntegrityError:
            raise Conflict(f"workspace_name: a workspace named {name!r} already exists") from None
        return {"workspace_id": wid, "workspace": answers.workspace(self.workspace(wid))}

    def require_workspace(self, workspace_id: int) -> None:
        self.workspace(workspace_id)

    # -- models and versions ----------------------------------------------
    async def add_version(
        self, *, workspace_id: int, name: str, visibility: str, conversion: dict[str, Any],
        input_schema: str, output_schema: str, writer: ArtifactWriter, file_name: str | None,
        openai_config: dict[str, Any] | None = None,
    ) -> int:
        """Validate and commit an uploaded zip, then record it; the same content is the same version
        (an `openai_config` given with it replaces the version's)."""
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
            stored_openai = None if openai_config is None else json.dumps(openai_config, sort_keys=True)
            if existing is not None:
                if stored_openai is not None:
                    c.execute("UPDATE model_versions SET openai_config = ? WHERE id = ?", (stored_openai, existing["id"]))
                return existing["id"]
            return c.execute(
                "INSERT INTO model_versions (model_id, version, sha, file_name, file_size, input_schema, "
                "output_schema, conversion, status, created_at, openai_config) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ready', ?, ?)",
                (model_id, str(uuid.uuid4()), sha, file_name or f"{name}.zip", writer.size,
                 input_schema, output_schema, json.dumps(conversion), now, stored_openai),
            ).lastrowid

    def set_openai_config(self, model_version_id: int, openai_config: dict[str, Any] | None) -> dict[str, Any]:
        """Set (or clear, with None) a version's OpenAI config (`models/insert_model_config`); its row."""
        self.version(model_version_id)
        stored = None if openai_config is None else json.dumps(openai_config, sort_keys=True)
        with self.db.tx() as c:
            c.execute("UPDATE model_versions SET openai_config = ? WHERE id = ?", (stored, model_version_id))
        return self.version(model_version_id)

    def set_dynamic_batching(self, model_version_id: int, config: dict[str, Any] | None) -> dict[str, Any]:
        """Set (or clear, with None) a version's `dynamic_batching_config`; its row. Deployments take it
        when they (re)start, as Wallaroo's do."""
        self.version(model_version_id)
        stored = None if config is None else json.dumps(config, sort_keys=True)
        with self.db.tx() as c:
            c.execute("UPDATE model_versions SET dynamic_batching_config = ? WHERE id = ?", (stored, model_version_id))
        return self.version(model_version_id)

    @staticmethod
    def openai_config(row: dict[str, Any]) -> dict[str, Any] | None:
        """A version row's OpenAI config (Wallaroo's OpenaiConfig fields), None when never set."""
        stored = row.get("openai_config")
        return None if stored is None else json.loads(stored)

    def version_row(self, where: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        return self.db.one(_VERSION_SELECT + where, params)

    def version_rows(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        return self.db.all(_VERSION_SELECT + where + " ORDER BY mv.id", params)

    def models(self, workspace_id: int | None) -> list[dict[str, Any]]:
        """`models/list` items: each model with its configured versions."""
        where, params = ("1=1", ()) if workspace_id is None else ("workspace_id = ?", (workspace_id,))
        out = []
        workspaces = {w["id"]: answers.workspace(w) for w in self.db.all("SELECT * FROM workspaces")}
        for m in self.db.all(f"SELECT * FROM models WHERE {where} ORDER BY id", params):
            versions = self.version_rows("mv.model_id = ?", (m["id"],))
            out.append({"model": answers.model(m, versions[-1]["created_at"] if versions else None),
                        "model_versions": [answers.configured_model_version(v) for v in versions],
                        "workspace": workspaces[m["workspace_id"]]})
        return out

    def versions(self, models_pk_id: int | None, name: str | None, workspace_id: int) -> list[dict[str, Any]]:
        """`models/list_versions` items of a model, by its id or by name in `workspace_id`."""
        if models_pk_id is not None:
            model = self.db.one("SELECT id FROM models WHERE id = ?", (models_pk_id,))
            label = f"models_pk_id: no model with id {models_pk_id}"
        else:
            model = self.db.one("SELECT id FROM models WHERE name = ? AND workspace_id = ?", (name, workspace_id))
            label = f"model_id: no model named {name!r} in workspace {workspace_id}"
        if model is None:
            raise NotFound(label)
        return [answers.version_item(r) for r in self.version_rows("mv.model_id = ?", (model["id"],))]

    def version(self, model_version_id: int) -> dict[str, Any]:
        row = self.version_row("mv.id = ?", (model_version_id,))
        if row is None:
            raise NotFound(f"model_version_id: no model version with id {model_version_id}")
        return row

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

    def delete_model(self, name: str, workspace_id: int) -> dict[str, Any]:
        """Every version of a model; `bytes` is the size of the artifacts it held."""
        model = self.db.one("SELECT * FROM models WHERE name = ? AND workspace_id = ?", (name, workspace_id))
        if model is None:
            raise NotFound(f"model_id: no model named {name!r} in workspace {workspace_id}")
        users = self.deployed_users(model["name"], model["workspace_id"])
        if users:
            raise Conflict(f"model {model['name']!r} is used by deployed pipeline(s) {', '.join(users)}; undeploy them first")
        rows = self.db.all("SELECT sha, file_size FROM model_versions WHERE model_id = ?", (model["id"],))
        with self.db.tx() as c:
            c.execute("DELETE FROM model_versions WHERE model_id = ?", (model["id"],))
            c.execute("DELETE FROM models WHERE id = ?", (model["id"],))
        for sha in {r["sha"] for r in rows}:
            if self.db.one("SELECT id FROM model_versions WHERE sha = ?", (sha,)) is None:
                self.artifacts.delete(sha)
                shutil.rmtree(self.models_dir / sha, ignore_errors=True)
        return {"bytes": sum(r["file_size"] for r in rows), "model_id": name, "models_pk_id": model["id"],
                "versions": len(rows)}

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
