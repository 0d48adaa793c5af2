"""Deployments: the desired state in the database, applied to this process's engine
(deploy, undeploy, restore at start, convergence of serving replicas, status)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from wallaroo_pulumi import engine_config
from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.runtime.core.errors import BadRequest, NotFound
from wallaroo_pulumi.runtime.core.secrets import SecretBox
from wallaroo_pulumi.runtime.engine.engine import Engine
from wallaroo_pulumi.runtime.services.pipelines import Pipelines, step_refs
from wallaroo_pulumi.runtime.store.db import Database, dumps
from wallaroo_pulumi.runtime.wire import answers
from wallaroo_pulumi.runtime.wire.answers import iso

log = logging.getLogger("wallaroo_pulumi.runtime.deployments")

CONVERGE_INTERVAL_S = 1.0
_STATUS = {"starting": "Starting", "running": "Running", "failed": "Error"}


class Deployments:
    def __init__(self, db: Database, secrets: SecretBox, engine: Engine, pipelines: Pipelines) -> None:
        self.db = db
        self.secrets = secrets
        self.engine = engine
        self.pipelines = pipelines
        self.applied: dict[int, float] = {}  # deployment id -> the updated_at applied in this process

    # -- changes -------------------------------------------------------------
    async def deploy(self, pipeline: dict[str, Any], version_id: int | None, wire_config: dict[str, Any] | None) -> int:
        """Deploy a version of `pipeline` with Wallaroo's nested engine_config (D33)."""
        version = self.pipelines.version_of(pipeline, version_id)
        refs = step_refs(json.loads(version["definition"]))
        if not refs:
            raise BadRequest(f"pipeline {pipeline['name']!r} version {version['version']} has no steps; "
                             "add a model step (pipelines/create with definition.steps) before deploying")
        steps = self.pipelines.steps(version, pipeline["workspace_id"])  # validates before storing
        versions: dict[str, set[int]] = {}
        for step in steps:
            versions.setdefault(step["name"], set()).add(step["id"])
        try:
            config = engine_config.parse(wire_config or {}, [r["name"] for r in refs], versions)
        except engine_config.EngineConfigError as exc:
            raise BadRequest(f"engine_config.{exc}") from None
        now = time.time()
        # the full config with its env sealed: needed to redeploy after a restart
        stored = dumps(self.secrets.seal_config(config.model_dump(mode="json")))
        with self.db.tx() as c:
            existing = c.execute("SELECT id FROM deployments WHERE pipeline_id = ?", (pipeline["id"],)).fetchone()
            if existing is None:
                dep_id = c.execute(
                    "INSERT INTO deployments (pipeline_id, deploy_name, pipeline_version_id, engine_config, desired, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, 'deployed', ?, ?)",
                    (pipeline["id"], pipeline["name"], version["id"], stored, now, now),
                ).lastrowid
            else:
                dep_id = existing["id"]
                c.execute(
                    "UPDATE deployments SET pipeline_version_id = ?, engine_config = ?, desired = 'deployed', updated_at = ? "
                    "WHERE id = ?", (version["id"], stored, now, dep_id),
                )
        self.applied[dep_id] = now  # before any await: convergence must not apply it again
        log.info("deploying %s-%d version %s config %s", pipeline["name"], dep_id, version["version"], json.dumps(config.redacted()))
        await self.engine.deploy(dep_id, pipeline["id"], pipeline["name"], version, steps, config)
        return dep_id

    async def undeploy(self, pipeline: dict[str, Any], deployment_id: int | None = None) -> bool:
        dep = self.db.one("SELECT * FROM deployments WHERE pipeline_id = ?", (pipeline["id"],))
        if dep is None:
            return False
        if deployment_id is not None and dep["id"] != deployment_id:
            raise NotFound(f"deployment_id: pipeline {pipeline['name']!r} has deployment {dep['id']}, not {deployment_id}")
        now = time.time()
        with self.db.tx() as c:
            c.execute("UPDATE deployments SET desired = 'undeployed', updated_at = ? WHERE id = ?", (now, dep["id"]))
        self.applied[dep["id"]] = now
        await self.engine.undeploy(pipeline["name"])
        return True

    async def undeploy_by_id(self, pipeline_id: int | None, deployment_id: int | None) -> None:
        """`pipelines/undeploy`: by the deployment's id, or the pipeline's (both must agree)."""
        if pipeline_id is None:
            dep = self.db.one("SELECT pipeline_id FROM deployments WHERE id = ?", (deployment_id,))
            if dep is None:
                raise NotFound(f"deployment_id: no deployment with id {deployment_id}")
            pipeline_id = dep["pipeline_id"]
        await self.undeploy(self.pipelines.find(pipeline_id), deployment_id)

    async def delete_pipeline(self, pipeline: dict[str, Any]) -> None:
        await self.undeploy(pipeline)
        self.pipelines.delete(pipeline["id"])

    # -- applying the stored state ----------------------------------------------
    async def apply_row(self, row: dict[str, Any]) -> None:
        """Bring this process's engine to one deployment row's desired state."""
        self.applied[row["id"]] = row["updated_at"]
        pipeline = self.db.one("SELECT * FROM pipelines WHERE id = ?", (row["pipeline_id"],))
        if pipeline is None:
            return
        if row["desired"] != "deployed":
            if await self.engine.undeploy(pipeline["name"]):
                log.info("undeployed %s-%d (desired state changed elsewhere)", pipeline["name"], row["id"])
            return
        version = self.pipelines.version(row["pipeline_version_id"])
        if version is None:  # recorded, so that its status says Error instead of Starting forever
            await self.engine.record_failure(row["id"], pipeline["id"], pipeline["name"], "?",
                                             f"pipeline version {row['pipeline_version_id']} no longer exists; deploy again")
            return
        try:
            config = DeploymentConfig.model_validate(self.secrets.open_config(json.loads(row["engine_config"])))
            steps = self.pipelines.steps(version, pipeline["workspace_id"])
            await self.engine.deploy(row["id"], pipeline["id"], pipeline["name"], version, steps, config)
            log.info("deploying %s-%d version %s (desired state)", pipeline["name"], row["id"], version["version"])
        except Exception as exc:  # noqa: BLE001 - one broken deployment must not stop the others
            log.error("could not deploy %s-%d: %s", pipeline["name"], row["id"], exc)
            await self.engine.record_failure(row["id"], pipeline["id"], pipeline["name"], version["version"], str(exc))

    async def restore(self) -> None:
        """At start: bring every deployment back to its last desired state."""
        for row in self.db.all("SELECT * FROM deployments"):
            await self.apply_row(row)

    def follow(self) -> None:
        """At start without redeploying: apply only later changes."""
        for row in self.db.all("SELECT id, updated_at FROM deployments"):
            self.applied[row["id"]] = row["updated_at"]

    async def converge_once(self) -> int:
        """Apply every deployment row changed since this process last saw it; how many were."""
        rows = self.db.all("SELECT d.*, p.name AS pipeline_name FROM deployments d JOIN pipelines p ON p.id = d.pipeline_id")
        applied = 0
        for row in rows:
            if self.applied.get(row["id"]) != row["updated_at"]:
                await self.apply_row(row)
                applied += 1
        wanted = {row["pipeline_name"] for row in rows if row["desired"] == "deployed"}
        for name in [n for n in self.engine.deployments if n not in wanted]:  # its pipeline was deleted elsewhere
            await self.engine.undeploy(name)
            applied += 1
        return applied

    async def converge_forever(self, interval_s: float = CONVERGE_INTERVAL_S) -> None:
        while True:
            try:
                await self.converge_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the database briefly locked: try again next round
                log.exception("converging on the deployments table")
            await asyncio.sleep(interval_s)

    # -- views -------------------------------------------------------------------
    def row(self, pipeline_id: int) -> dict[str, Any] | None:
        return self.db.one("SELECT * FROM deployments WHERE pipeline_id = ?", (pipeline_id,))

    def wire_config(self, dep: dict[str, Any]) -> dict[str, Any]:
        """A deployment's engine_config in Wallaroo's nested form, env values hidden."""
        config = DeploymentConfig.model_validate(json.loads(dep["engine_config"]))
        version = self.pipelines.version(dep["pipeline_version_id"])
        wire_config = engine_config.from_config(
            config, engine_config.key_of_steps(self.pipelines.step_views(version)))
        return engine_config.redacted(wire_config)

    def item(self, p: dict[str, Any]) -> dict[str, Any]:
        """`pipelines/get_pipeline_by_name` and `list_pipelines` item: the pipeline, its topic, its
        workspace, its deployment's replicas and its current version."""
        version = self.pipelines.version(p["current_version_id"])
        dep = self.row(p["id"])
        out: dict[str, Any] = {
            "pipeline": answers.pipeline(p, max(version["created_at"], dep["updated_at"] if dep else 0) if version else None),
            "plateau_topic": answers.topic_name(p["workspace_id"], p["name"]),
            "workspace": answers.workspace(self.pipelines.registry.workspace(p["workspace_id"])),
        }
        if version is not None:
            out["pipeline_version"] = self._legacy_version(p, version)
        if dep is not None and dep["desired"] == "deployed":
            out["deployment"] = answers.replica_bounds(json.loads(dep["engine_config"]))
        return out

    def version_items(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        """`pipelines/list_pipeline_versions`: one list item per version, newest first."""
        base = self.item(p)
        rows = self.db.all("SELECT * FROM pipeline_versions WHERE pipeline_id = ? ORDER BY id DESC", (p["id"],))
        return [{**base, "pipeline_version": self._legacy_version(p, v)} for v in rows]

    @staticmethod
    def _legacy_version(p: dict[str, Any], version: dict[str, Any]) -> dict[str, Any]:
        return {"id": str(version["id"]), "workspace_id": p["workspace_id"], "created_at": iso(version["created_at"]),
                "version": version["version"], "steps": json.loads(version["definition"])}

    def _by_deploy_name(self, name: str, workspace_id: int | None) -> tuple[dict[str, Any], int | None]:
        """'<pipeline>-<id>' (pipeline names may contain '-') or a bare pipeline name."""
        base, _, tail = name.rpartition("-")
        if base and tail.isdigit():
            row = self.pipelines.by_name(base, workspace_id or 1)
            if row is not None:
                return row, int(tail)
        row = self.pipelines.by_name(name, workspace_id or 1)
        if row is None:
            raise NotFound(f"no deployment named {name!r}: expected '<pipeline>-<deployment id>' of an existing pipeline")
        return row, None

    def status(self, name: str, workspace_id: int | None) -> dict[str, Any]:
        pipeline, dep_id = self._by_deploy_name(name, workspace_id)
        dep = self.db.one("SELECT * FROM deployments WHERE pipeline_id = ?", (pipeline["id"],))
        if dep is None or (dep_id is not None and dep["id"] != dep_id):
            raise NotFound(f"deployment {name!r} does not exist (pipeline {pipeline['name']!r} "
                           + (f"has deployment {dep['id']})" if dep else "was never deployed)"))
        state = self.engine.get(pipeline["name"])
        if dep["desired"] == "deployed" and (state is None or self.applied.get(dep["id"]) != dep["updated_at"]):
            # Deployed through another replica and not caught up yet, or this process is between storing
            # the change and registering it with its engine (status runs on a worker thread).
            return answers.deployment_status({"name": f"{pipeline['name']}-{dep['id']}", "status": "Starting",
                                           "details": ["this replica is applying the latest deploy"]})
        if dep["desired"] != "deployed" or state is None:
            raise NotFound(f"deployment {pipeline['name']}-{dep['id']} is not deployed (undeployed); "
                           "deploy it with /v1/api/pipelines/deploy")
        return answers.deployment_status(self.engine.status(state))
