"""The runtime's parts, built once per app on one data directory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request

from wallaroo_pulumi.runtime.artifacts import ArtifactStore
from wallaroo_pulumi.runtime.auth import TokenStore
from wallaroo_pulumi.runtime.db import Database, dumps
from wallaroo_pulumi.runtime.logstore import LogStore
from wallaroo_pulumi.runtime.metrics import Metrics
from wallaroo_pulumi.runtime.secrets import SecretBox
from wallaroo_pulumi.runtime.settings import RuntimeSettings

log = logging.getLogger("wallaroo_pulumi.runtime")


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class Runtime:
    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        data_dir = settings.data_dir = Path(settings.data_dir).expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(data_dir, 0o700)
        except PermissionError:  # e.g. a Kubernetes volume root owned by root, writable through fsGroup
            log.warning("data dir %s is not owned by this user; its mode was left as is", data_dir)
        self.db = Database(data_dir / "runtime.db")
        self.tokens = TokenStore(self.db, data_dir)
        admin = settings.admin_token
        self.tokens.ensure_admin(admin.get_secret_value() if admin is not None else None)
        key = settings.secrets_key
        self.secrets = SecretBox.for_data_dir(data_dir, key.get_secret_value() if key is not None else None)
        self._seal_plaintext_credentials()
        self.artifacts = ArtifactStore(data_dir / "artifacts")
        self.logstore = LogStore.shared(data_dir / "logs")
        self.metrics = Metrics()
        from wallaroo_pulumi.runtime.engine import Engine

        self.engine = Engine(self)
        self.metrics.bind_engine(self.engine)
        self.applied_deployments: dict[int, float] = {}  # deployment id -> the updated_at applied here
        self._converging: asyncio.Task[None] | None = None
        self._pruning: asyncio.Task[None] | None = None

    def _seal_plaintext_credentials(self) -> None:
        """Deployments stored before credentials were sealed get sealed now (updated_at kept:
        nothing is redeployed for it)."""
        sealed = 0
        for row in self.db.all("SELECT id, engine_config FROM deployments"):
            config = json.loads(row["engine_config"])
            if SecretBox.has_plaintext(config):
                with self.db.tx() as c:
                    c.execute("UPDATE deployments SET engine_config = ? WHERE id = ?",
                              (dumps(self.secrets.seal_config(config)), row["id"]))
                sealed += 1
        if sealed:
            log.info("sealed the stored credentials of %d deployment(s)", sealed)
        self.db.scrub()  # old page images and free-page residue go too

    async def startup(self) -> None:
        retention = self.settings.log_retention_s
        if retention and self.settings.role in ("all", "scheduler"):  # exactly one pruner per data dir
            from wallaroo_pulumi.runtime import retention as log_retention

            self._pruning = asyncio.create_task(log_retention.run_forever(self, retention), name="log-retention")
        if self.settings.role == "scheduler":
            # the scheduler pod is not behind the Service: no LLM sidekicks (or GPUs) held there
            if self.settings.redeploy_on_start:
                log.info("role scheduler: deployed pipelines are not redeployed in this process")
            return
        if self.settings.redeploy_on_start:
            from wallaroo_pulumi.runtime.routes.pipelines import restore_deployments

            await restore_deployments(self)
        else:  # follow later changes only
            for row in self.db.all("SELECT id, updated_at FROM deployments"):
                self.applied_deployments[row["id"]] = row["updated_at"]
        if self.settings.role == "serve":
            # replicas behind one Service: a deploy reaching any of them must hold in all
            from wallaroo_pulumi.runtime import convergence

            self._converging = asyncio.create_task(convergence.run_forever(self), name="converge-deployments")

    async def shutdown(self) -> None:
        for task in (self._converging, self._pruning):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.engine.shutdown()
        self.logstore.close()


def get_rt(request: Request) -> Runtime:
    return request.app.state.rt


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)
