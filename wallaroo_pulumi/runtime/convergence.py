"""Serving replicas converge on the `deployments` table.

With `--role serve`, several processes share one data directory behind one
Kubernetes Service. A deploy or undeploy reaches one of them, yet every replica
must serve the same pipelines at the same version and config. The table holds
the desired state (`desired`, `pipeline_version_id`, `engine_config`) and when
it last changed (`updated_at`); each process remembers the `updated_at` it has
applied per deployment, and a replica polls the table once a second and applies
what it has not: the same code path that restores deployments after a restart.
A change a process makes itself is marked applied in the same step that stores
it, so it is never applied twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from wallaroo_pulumi.deployment import DeploymentConfig

log = logging.getLogger("wallaroo_pulumi.runtime.convergence")

INTERVAL_S = 1.0


def mark_applied(rt: Any, deployment_id: int, updated_at: float) -> None:
    rt.applied_deployments[deployment_id] = updated_at


async def apply_row(rt: Any, row: dict[str, Any]) -> None:
    """Bring this process's engine to one deployment row's desired state."""
    from wallaroo_pulumi.runtime.routes.pipelines import start_deployment

    mark_applied(rt, row["id"], row["updated_at"])
    pipeline = rt.db.one("SELECT * FROM pipelines WHERE id = ?", (row["pipeline_id"],))
    if pipeline is None:
        return
    if row["desired"] != "deployed":
        if await rt.engine.undeploy(pipeline["name"]):
            log.info("undeployed %s-%d (desired state changed elsewhere)", pipeline["name"], row["id"])
        return
    version = rt.db.one("SELECT * FROM pipeline_versions WHERE id = ?", (row["pipeline_version_id"],))
    if version is None:  # recorded, so that its status says Error instead of Starting forever
        await rt.engine.record_failure(row["id"], pipeline["id"], pipeline["name"], "?",
                                       f"pipeline version {row['pipeline_version_id']} no longer exists; deploy again")
        return
    try:
        config = DeploymentConfig.model_validate(rt.secrets.open_config(json.loads(row["engine_config"])))
        await start_deployment(rt, pipeline, version, config, row["id"])
        log.info("deploying %s-%d version %s (desired state)", pipeline["name"], row["id"], version["version"])
    except Exception as exc:  # noqa: BLE001 - one broken deployment must not stop the others
        log.error("could not deploy %s-%d: %s", pipeline["name"], row["id"], exc)
        await rt.engine.record_failure(row["id"], pipeline["id"], pipeline["name"], version["version"], str(exc))


async def converge_once(rt: Any) -> int:
    """Apply every deployment row changed since this process last saw it; how many were."""
    rows = rt.db.all("SELECT d.*, p.name AS pipeline_name FROM deployments d "
                     "JOIN pipelines p ON p.id = d.pipeline_id")
    applied = 0
    for row in rows:
        if rt.applied_deployments.get(row["id"]) != row["updated_at"]:
            await apply_row(rt, row)
            applied += 1
    wanted = {row["pipeline_name"] for row in rows if row["desired"] == "deployed"}
    for name in [n for n in rt.engine.deployments if n not in wanted]:  # its pipeline was deleted elsewhere
        await rt.engine.undeploy(name)
        applied += 1
    return applied


async def run_forever(rt: Any, interval_s: float = INTERVAL_S) -> None:
    while True:
        try:
            await converge_once(rt)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - e.g. the database briefly locked: try again next round
            log.exception("converging on the deployments table")
        await asyncio.sleep(interval_s)
