"""`Runtime`: the runtime's stores and services, built once per app on one data directory,
started and stopped by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.core.secrets import SecretBox
from wallaroo_pulumi.runtime.engine.engine import Engine
from wallaroo_pulumi.runtime.engine.model_files import ModelFiles
from wallaroo_pulumi.runtime.sandbox.sandbox import Sandbox
from wallaroo_pulumi.runtime.sandbox.support import Support
from wallaroo_pulumi.runtime.services.access.keys import KeyStore
from wallaroo_pulumi.runtime.services.access.limits import Limiter
from wallaroo_pulumi.runtime.services.access.service import KeysService
from wallaroo_pulumi.runtime.services.access.targets import Targets
from wallaroo_pulumi.runtime.services.access.usage import UsageMeter
from wallaroo_pulumi.runtime.services.deployments import Deployments
from wallaroo_pulumi.runtime.services.edge import EdgeAgent, EdgeJoinRefused, import_publish
from wallaroo_pulumi.runtime.services.edge.importer import read_publish
from wallaroo_pulumi.runtime.services.graphql import Graph
from wallaroo_pulumi.runtime.services.guardrails.service import GuardrailPolicies
from wallaroo_pulumi.runtime.services.inference import Inference
from wallaroo_pulumi.runtime.services.inference_logs import InferenceLogs
from wallaroo_pulumi.runtime.services.listeners import ListenerModelRef, ListenerService
from wallaroo_pulumi.runtime.services.openai_api.service import OpenAIEndpoints
from wallaroo_pulumi.runtime.services.orchestrations import OrchestrationService, TaskPython, TaskRunner
from wallaroo_pulumi.runtime.services.pipelines import Pipelines
from wallaroo_pulumi.runtime.services.publish import EdgeLinks, Publishes, PublishTarget
from wallaroo_pulumi.runtime.services.registry import Registry
from wallaroo_pulumi.runtime.settings import RuntimeSettings
from wallaroo_pulumi.runtime.sidekick import SandboxedPlacement
from wallaroo_pulumi.runtime.store.backends import open_artifacts, open_database, open_logstore
from wallaroo_pulumi.runtime.store.db import dumps
from wallaroo_pulumi.runtime.store.retention import LogRetention

log = logging.getLogger("wallaroo_pulumi.runtime")


class Runtime:
    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        data_dir = settings.data_dir = Path(settings.data_dir).expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(data_dir, 0o700)
        except PermissionError:  # e.g. a Kubernetes volume root owned by root, writable through fsGroup
            log.warning("data dir %s is not owned by this user; its mode was left as is", data_dir)
        database = settings.database_url.get_secret_value() if settings.database_url is not None else None
        self.db = open_database(data_dir, database)
        log.info("metadata: %s", self.db.describe())
        self.key_store = KeyStore(self.db, data_dir)
        admin = settings.admin_token
        self.key_store.ensure_admin(admin.get_secret_value() if admin is not None else None)
        key = settings.secrets_key
        self.secrets = SecretBox.for_data_dir(data_dir, key.get_secret_value() if key is not None else None)
        self.artifacts = open_artifacts(data_dir, settings.object_store_url)
        self.logstore = open_logstore(data_dir, settings.object_store_url, self.db, compact=settings.edge is None)
        self.metrics = Metrics()
        self.logstore.on_write_error = lambda pipeline, _exc: self.metrics.log_errors.labels(pipeline).inc()
        # every worker and every requirements install confined; refused where the kernel cannot (D31)
        self.sandbox = Sandbox(Support.detect(), uids=settings.sidekick_uids, protect=[data_dir],
                               insecure=settings.insecure_sidekicks)
        self.sandbox.log_status()
        self.model_files = ModelFiles(data_dir, self.artifacts, self.sandbox,  # an edge installs nothing (D56)
                                      baked=settings.edge.publish_dir / "deps" if settings.edge is not None else None)
        # one for pipeline steps and listener models alike
        self.placement = SandboxedPlacement(self.sandbox, allow_gpu_fallback=settings.allow_gpu_fallback)
        self.pods = None  # model steps as pods of their own on a cluster (D35), else local processes
        if settings.kubernetes is not None:
            from wallaroo_pulumi.runtime.kube.placement import KubernetesPlacement

            self.pods = KubernetesPlacement(settings.kubernetes, self.artifacts.fetch)  # a local copy: steps unpack it first
        self.engine = Engine(self.model_files, self.placement, self.metrics, settings.host, steps=self.pods)
        self.registry = Registry(self.db, self.artifacts, self.model_files.models_dir)
        self.pipelines = Pipelines(self.db, self.registry)
        self.deployments = Deployments(self.db, self.secrets, self.engine, self.pipelines)
        self.graph = Graph(self.db, self.registry, self.pipelines, self.deployments, self._orchestration_node)
        self.limiter = Limiter(self.metrics.registry)
        self.usage = UsageMeter(self.db, self.metrics.registry, self.limiter)
        self.guardrails = GuardrailPolicies(self.db, self.pipelines, self.metrics)
        self.inference = Inference(self.engine, self.pipelines, self.logstore, self.metrics, usage=self.usage.record,
                                   guardrails=self.guardrails)
        self.openai = OpenAIEndpoints(self.inference, self.registry, self.metrics)
        self.targets = Targets(self.db, self.inference.resolve, self.logstore.pipelines)
        self.keys = KeysService(self.key_store, self.registry, self.usage)
        self.logs = InferenceLogs(self.pipelines, self.logstore)
        pub = settings.publish
        target = None if pub is None else PublishTarget(
            pub.registry, pub.base_image, pub.username, pub.password.get_secret_value() if pub.password else None,
            pub.insecure)
        self.publishes = Publishes(self.db, self.secrets, self.pipelines, self.model_files, target,
                                   (pub.centre_url if pub is not None else None) or settings.url, data_dir / "publish-work")
        self.edge_links = EdgeLinks(self.db, self.pipelines, self.publishes, self.logstore)
        self.edge: EdgeAgent | None = None
        self.edge_manifest: dict[str, Any] | None = None
        if settings.edge is not None:
            self.edge_manifest = read_publish(settings.edge.publish_dir)
            self.edge = EdgeAgent(settings.edge, data_dir, self.logstore, self.edge_manifest["pipeline"])
        # user orchestrations: packaged here, their task runs sandboxed with keys of their own (D50)
        self.orchestrations = OrchestrationService(self.db, self.artifacts, self.sandbox, data_dir,
                                                   TaskPython(settings.task_python))
        self.task_runner = self._task_runner()
        self.listeners = ListenerService(
            self.db, self.logstore, resolver=self.resolve_listener_model, role=settings.role,
            lease_seconds=settings.listener_lease_s, metrics=self.metrics, placement=self.placement,
            tasks=self.task_runner,
        ) if settings.listeners else None
        self._tasks: list[asyncio.Task[None]] = []
        self._seal_plaintext_credentials()

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

    def _orchestration_node(self, oid: str) -> dict[str, Any] | None:
        """An orchestration as GraphQL's `orchestration_by_pk` answers it (the built-in's id included)."""
        from wallaroo_pulumi.orchestration import ORCHESTRATION_ID
        from wallaroo_pulumi.runtime.services.orchestrations import builtin_view, orchestration_view

        if oid == ORCHESTRATION_ID:
            return builtin_view(1)
        row = self.orchestrations.find(oid)
        return orchestration_view(row) if row is not None else None

    def _task_runner(self) -> TaskRunner:
        """Task runs as sandboxed processes here, or on Kubernetes as Jobs of their own (D54)."""
        kube = self.settings.kubernetes
        if self.pods is None or kube is None:
            return TaskRunner(self.orchestrations, self.sandbox, self.key_store, self.task_api_url)
        from wallaroo_pulumi.runtime.kube.jobs import TaskJobs
        from wallaroo_pulumi.runtime.services.orchestrations.kube_runner import KubeTaskRunner

        jobs = TaskJobs(self.pods.ctx, kube.task_image or kube.image, kube.task_url or self.task_api_url())
        return KubeTaskRunner(self.orchestrations, self.sandbox, self.key_store, self.task_api_url, jobs, kube.image)

    def task_api_url(self) -> str:
        """Where a task's SDK reaches this runtime: its own address, loopback when it listens on all."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.settings.host, self.settings.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.settings.port}"

    async def resolve_listener_model(self, workspace_id: int, name: str, version: str | None) -> ListenerModelRef:
        """A listener model uploaded to the registry, unpacked with its requirements (LookupError if none)."""
        row = await asyncio.to_thread(self.registry.latest_version, workspace_id, name, version)
        if row is None:
            raise LookupError(name)
        model_dir = await self.model_files.model_dir(row["sha"])
        requirements = json.loads(row["conversion"] or "{}").get("requirements") or []
        extra = await self.model_files.requirements(model_dir, requirements)
        return ListenerModelRef(name=name, version=row["version"], model_dir=model_dir, sha=row["sha"],
                                extra_pythonpath=list(extra))

    async def start(self) -> None:
        settings = self.settings
        if self.pods is not None:
            await self.pods.start()
        if settings.log_retention_s and settings.role in ("all", "scheduler"):  # exactly one pruner per data dir
            pruner = LogRetention(self.logstore, self.db, self.metrics, settings.log_retention_s)
            self._background(pruner.run_forever(), "log-retention")
        if settings.role == "scheduler":
            # the scheduler pod is not behind the Service: no LLM sidekicks (or GPUs) held there
            if settings.redeploy_on_start:
                log.info("role scheduler: deployed pipelines are not redeployed in this process")
        elif settings.redeploy_on_start:
            await self.deployments.restore()
            if self.pods is not None and settings.role == "all":  # the one process applying desired state
                self._background(self._collect_orphans(), "kube-orphans")
        else:
            self.deployments.follow()
        if settings.role == "serve":  # replicas behind one Service: a deploy reaching any of them must hold in all
            self._background(self.deployments.converge_forever(), "converge-deployments")
        await self.orchestrations.start()
        if self.listeners is not None:
            await self.listeners.start()
        await self.publishes.resume()
        if self.edge is not None:
            await self._start_edge()
        self._background(self._flush_usage_forever(), "usage-flush")
        self._background(self.key_store.refresh_forever(), "keys-refresh")

    async def _start_edge(self) -> None:
        """The published pipeline deployed here (again when the image is a newer publish), the edge
        joined when the centre answers (a refused join token stops the start), its shipper started."""
        assert self.edge is not None and self.edge_manifest is not None and self.settings.edge is not None
        try:
            await asyncio.to_thread(self.edge.join)
        except EdgeJoinRefused as exc:
            log.error("%s", exc)
            raise
        marker = self.settings.data_dir / "edge-publish.json"
        done = json.loads(marker.read_text()) if marker.exists() else {}
        if done.get("publish_id") != self.edge_manifest["publish_id"]:
            await import_publish(self.edge_manifest, self.settings.edge.publish_dir, self.registry, self.artifacts,
                                 self.pipelines, self.deployments, self.settings.max_upload_bytes)
            marker.write_text(json.dumps({"publish_id": self.edge_manifest["publish_id"]}) + "\n")
        self._background(self.edge.run_forever(), "edge-shipper")

    async def _collect_orphans(self) -> None:
        """Once the restored deployments have settled: delete the step objects none of them claims."""
        assert self.pods is not None
        for name in list(self.engine.deployments):
            await self.engine.wait_settled(name)
        await self.pods.collect_orphans()

    async def _flush_usage_forever(self, interval_s: float = 5.0) -> None:
        """Keys' last use and usage figures reach the database every few seconds (and at stop)."""
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self._flush_usage)

    def _flush_usage(self) -> None:
        self.usage.flush()
        self.key_store.flush_last_used()

    def _background(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self) -> None:
        if self.listeners is not None:
            await self.listeners.stop()
        await self.publishes.stop()
        await self.orchestrations.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._flush_usage()
        if self.pods is not None:
            self.pods.detach()  # the step pods keep serving while the runtime restarts
        await self.engine.shutdown()
        if self.pods is not None:
            await self.pods.close()
        self.sandbox.close()
        if self.edge is not None:
            self.edge.close()
        self.logstore.close()
