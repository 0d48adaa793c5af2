"""`Publishes`: a pipeline version published as an OCI image (built in the background, its status
polled as Wallaroo's SDK polls it), the edges of each publish with their one-use join tokens, and an
upgrade (`replaces`) moving edges to a new publish. The edges' own calls are `links.EdgeLinks`'."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wallaroo_pulumi import engine_config
from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.runtime.core.errors import BadRequest, Conflict, NotFound, WallarooError
from wallaroo_pulumi.runtime.core.secrets import SecretBox
from wallaroo_pulumi.runtime.engine.model_files import ModelFiles
from wallaroo_pulumi.runtime.services.pipelines import Pipelines
from wallaroo_pulumi.runtime.services.publish.bundle import EdgeBundle
from wallaroo_pulumi.runtime.services.publish.chart import build_chart, push_chart
from wallaroo_pulumi.runtime.services.publish.deps import bake_requirements
from wallaroo_pulumi.runtime.services.publish.image import push_image, write_layer
from wallaroo_pulumi.runtime.services.publish.lease import BuildLease
from wallaroo_pulumi.runtime.services.publish.store import ensure_tables
from wallaroo_pulumi.runtime.store.db import Database, IntegrityError, dumps
from wallaroo_pulumi.runtime.store.oci import ImageRef, OciRegistry, RegistryError
from wallaroo_pulumi.runtime.wire.answers import iso

log = logging.getLogger("wallaroo_pulumi.runtime.publish")
CREATED_ON_VERSION = "2026.1.3"  # the SDK release whose wire format this answers
EDGE_NAME_HELP = "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"


@dataclass
class PublishTarget:
    """Where publishes go: `registry` is host[:port]/prefix; `base_image` the runtime image in a registry."""

    registry: str
    base_image: str
    username: str | None = None
    password: str | None = None
    insecure: bool = False

    def client(self, host: str) -> OciRegistry:
        return OciRegistry(host, self.username, self.password, insecure=self.insecure)


def _helm(row: dict[str, Any]) -> dict[str, Any] | None:
    """The SDK's `helm`: the chart (registry/repository; `oci://` is the SDK's to add), its version and
    digest, and `values` to set beyond the chart's own (the SDK adds each edge's `edgeBundle`)."""
    if not row["chart"]:
        return None
    return {"chart": row["chart"], "version": row["chart_version"], "reference": f"{row['chart']}@{row['chart_digest']}",
            "values": {}}


def sha(text: str) -> str:
    """How join tokens and edge keys are kept: their SHA-256, hex."""
    return hashlib.sha256(text.encode()).hexdigest()


class Publishes:
    def __init__(self, db: Database, secrets_box: SecretBox, pipelines: Pipelines, model_files: ModelFiles,
                 target: PublishTarget | None, centre_url: str, work_dir: Path) -> None:
        self.db = db
        self.model_files = model_files
        self.secrets = secrets_box
        self.pipelines = pipelines
        self.artifacts = model_files.artifacts
        self.target = target
        self.centre_url = centre_url
        self.work_dir = work_dir
        self._tasks: set[asyncio.Task[None]] = set()
        self._building: set[int] = set()
        ensure_tables(db)
        self.lease = BuildLease(db)

    # -- publishing ------------------------------------------------------------------
    def publish(self, version_id: int, model_config_ids: list[int], wire_config: dict[str, Any] | None,
                replaces: list[int]) -> dict[str, Any]:
        """Record a publish (PendingPublish) and build it in the background; its answer (202)."""
        if self.target is None:
            raise BadRequest("publishing needs a registry: start the runtime with --publish-registry HOST/PREFIX and "
                             "--publish-base-image (the runtime image in a registry), credentials in "
                             "$WALLAROO_OCI_USERNAME / $WALLAROO_OCI_PASSWORD", status=400)
        version = self.pipelines.version(version_id)
        if version is None:
            raise NotFound(f"pipeline_version_id: no pipeline version with id {version_id}")
        pipeline = self.pipelines.find(version["pipeline_id"])
        steps = self.pipelines.step_views(version)
        if not steps:
            raise BadRequest(f"pipeline_version_id: version {version['version']} of {pipeline['name']!r} has no steps")
        wanted = sorted(s["model_version_id"] for s in steps)
        if model_config_ids and sorted(model_config_ids) != wanted:
            raise BadRequest(f"model_config_ids: {sorted(model_config_ids)} are not the model configs of version "
                             f"{version['version']} ({wanted})")
        try:
            config = engine_config.parse(wire_config or {}, [s["name"] for s in steps], versions_of(steps))
        except engine_config.EngineConfigError as exc:
            raise BadRequest(f"engine_config.{exc}") from None
        for old in replaces:
            self.row(old, "replaces")
        stored = config.model_dump(mode="json")
        for side in stored["sidekicks"].values():  # no credential goes into the image: the edge gives its own
            side["env"] = {name: "" for name in side["env"]}
        now = time.time()
        with self.db.tx() as c:
            pid = c.execute(
                "INSERT INTO publishes (pipeline_id, pipeline_version_id, workspace_id, engine_config, replaces, status, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'PendingPublish', ?, ?)",
                (pipeline["id"], version_id, pipeline["workspace_id"], dumps(stored), dumps(replaces), now, now),
            ).lastrowid
        assert pid is not None
        self._spawn(pid)
        return self.answer(self.row(pid))

    def _spawn(self, publish_id: int) -> None:
        if publish_id in self._building:
            return
        self._building.add(publish_id)
        task = asyncio.get_running_loop().create_task(self._build(publish_id), name=f"publish-{publish_id}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: (self._tasks.discard(t), self._building.discard(publish_id)))

    async def resume(self) -> None:
        """At start, then every half lease: unfinished publishes no live builder holds (a stopped
        runtime's, another replica's that stopped) are built here (BuildLease: one builder each)."""
        for publish_id in self.lease.due():
            self._spawn(publish_id)
        task = asyncio.get_running_loop().create_task(self._resume_forever(), name="publish-resume")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resume_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease.lease_s / 2)
            for publish_id in await asyncio.to_thread(self.lease.due):
                self._spawn(publish_id)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _set(self, publish_id: int, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.tx() as c:
            c.execute(f"UPDATE publishes SET {cols}, updated_at = ? WHERE id = ?", (*fields.values(), time.time(), publish_id))

    async def _build(self, publish_id: int) -> None:
        if not await asyncio.to_thread(self.lease.claim, publish_id):
            return  # another replica builds it
        started = time.monotonic()
        holding = asyncio.get_running_loop().create_task(self.lease.hold(publish_id))
        try:
            pushed, chart = await asyncio.to_thread(self._build_and_push, publish_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is the publish's Error status, with its reason
            message = str(exc) if isinstance(exc, RegistryError | WallarooError) else f"{type(exc).__name__}: {exc}"
            log.error("publish %d failed: %s", publish_id, message)
            self._set(publish_id, status="Error", error=message)
            return
        finally:
            holding.cancel()
        seconds = time.monotonic() - started
        row = self.row(publish_id)
        with self.db.tx() as c:
            c.execute("UPDATE publishes SET status = 'Published', image = ?, digest = ?, image_bytes = ?, "
                      "publish_seconds = ?, chart = ?, chart_version = ?, chart_digest = ?, chart_seconds = ?, "
                      "updated_at = ? WHERE id = ?",
                      (pushed.image, pushed.digest, pushed.size, seconds, *chart, time.time(), publish_id))
            for old in json.loads(row["replaces"]):  # each edge of a replaced publish gets a fresh join token here
                for edge in c.execute("SELECT id FROM edges WHERE publish_id = ?", (old,)).fetchall():
                    token = secrets.token_urlsafe(32)
                    c.execute("UPDATE edges SET publish_id = ?, join_token = ?, join_sha256 = ?, joined_at = NULL "
                              "WHERE id = ?", (publish_id, self.secrets.seal(token), sha(token), edge["id"]))
        log.info("published %s (%d MiB in the registry) and its chart oci://%s %s in %.1f s", pushed.image,
                 pushed.size // 2**20, chart[0], chart[1], seconds)

    def _build_and_push(self, publish_id: int) -> tuple[Any, tuple[str, str, str, float]]:
        """The image, then its chart: (what push_image made, (chart, version, digest, chart push seconds))."""
        assert self.target is not None
        row = self.row(publish_id)
        version = self.pipelines.version(row["pipeline_version_id"])
        if version is None:
            raise WallarooError(f"pipeline version {row['pipeline_version_id']} no longer exists")
        pipeline = self.pipelines.find(version["pipeline_id"])
        steps = self.pipelines.steps(version, pipeline["workspace_id"])
        artifacts: dict[str, Path] = {}
        for step in steps:
            path = self.artifacts.fetch(step["sha"])
            if not path.exists():
                raise WallarooError(f"model {step['name']!r} version {step['version']}: its artifact is missing")
            artifacts[step["sha"]] = path
        rows = {r["sha"]: r for r in (self.pipelines.registry.version_row("mv.sha = ? AND m.name = ?", (s["sha"], s["name"]))
                                      for s in steps) if r is not None}
        manifest = {
            "publish_id": publish_id, "pipeline": pipeline["name"], "pipeline_version": version["version"],
            "definition": json.loads(version["definition"]), "engine_config": json.loads(row["engine_config"]),
            "models": [{"name": s["name"], "version": s["version"], "sha": s["sha"], "model_version_id": s["id"],
                        "file_name": rows[s["sha"]]["file_name"] if s["sha"] in rows else f"{s['name']}.zip",
                        "input_schema": rows[s["sha"]]["input_schema"], "output_schema": rows[s["sha"]]["output_schema"],
                        "conversion": json.loads(rows[s["sha"]]["conversion"])} for s in steps],
        }
        base = ImageRef.parse(self.target.base_image, "publish base image")
        host, _, prefix = self.target.registry.partition("/")
        repository = "/".join(p for p in (prefix, "pipelines", pipeline["name"]) if p)
        target = ImageRef(host, repository, tag=f"{version['version']}-{publish_id}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"publish-{publish_id}-", dir=self.work_dir))
        try:
            deps = bake_requirements(self.model_files, steps, self.work_dir / "deps",
                                     lambda msg: log.info("publish %d: %s", publish_id, msg))
            layer = write_layer(tmp / "layer.tar.gz", manifest, artifacts, deps)
            labels = {"wallaroo.pipeline": pipeline["name"], "wallaroo.pipeline_version": version["version"],
                      "wallaroo.publish_id": str(publish_id)}
            with self.target.client(base.registry) as base_registry, self.target.client(host) as registry:
                pushed = push_image(base, base_registry, target, registry, layer, labels,
                                    lambda msg: log.info("publish %d: %s", publish_id, msg))
                log.info("publish %d: helm chart", publish_id)
                started = time.monotonic()
                chart = build_chart(pipeline["name"], version["version"], publish_id, target, pushed.digest,
                                    "/".join(p for p in (prefix, "charts", pipeline["name"]) if p),
                                    DeploymentConfig.model_validate(json.loads(row["engine_config"])))
                digest = push_chart(registry, chart)
                return pushed, (chart.chart, chart.version, digest, time.monotonic() - started)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def delete(self, publish_id: int) -> dict[str, Any]:
        """Ours: the image's tag deleted from the registry, then the publish and its edges."""
        row = self.row(publish_id)
        removed = False
        if row["image"] and self.target is not None:
            ref = ImageRef.parse(row["image"])
            try:
                with self.target.client(ref.registry) as registry:
                    removed = registry.delete_tag(ref)
                    if row["chart"]:
                        registry.delete_tag(ImageRef.parse(f"{row['chart']}:{row['chart_version']}"))
            except RegistryError as exc:
                raise WallarooError(f"publish {publish_id}: {exc}", status=502, source="registry") from None
        with self.db.tx() as c:
            c.execute("DELETE FROM edges WHERE publish_id = ?", (publish_id,))
            c.execute("DELETE FROM publishes WHERE id = ?", (publish_id,))
        return {"id": publish_id, "image_deleted": removed}

    # -- reading -----------------------------------------------------------------------
    def row(self, publish_id: int, field: str = "id") -> dict[str, Any]:
        row = self.db.one("SELECT * FROM publishes WHERE id = ?", (publish_id,))
        if row is None:
            raise NotFound(f"{field}: no publish with id {publish_id}")
        return row

    def status(self, publish_id: int, include_replace_bundles: bool) -> dict[str, Any]:
        row = self.row(publish_id)
        bundles = self._bundles(publish_id, waiting_only=True) if include_replace_bundles else {}
        return self.answer(row, bundles)

    def answer(self, row: dict[str, Any], bundles: dict[str, str] | None = None) -> dict[str, Any]:
        """The SDK's `PipelinePublish` fields."""
        version = self.pipelines.version(row["pipeline_version_id"])
        pipeline = self.db.one("SELECT * FROM pipelines WHERE id = ?", (row["pipeline_id"],))
        workspace = self.db.one("SELECT * FROM workspaces WHERE id = ?", (row["workspace_id"],))
        config = DeploymentConfig.model_validate(json.loads(row["engine_config"]))
        wire = engine_config.redacted(engine_config.from_config(
            config, engine_config.key_of_steps(self.pipelines.step_views(version))))
        replaced = []
        for old in json.loads(row["replaces"]):
            old_row = self.db.one("SELECT * FROM publishes WHERE id = ?", (old,))
            old_version = self.pipelines.version(old_row["pipeline_version_id"]) if old_row else None
            if old_row is not None and old_version is not None:
                replaced.append({"id": old, "pipeline_name": pipeline["name"] if pipeline else "",
                                 "pipeline_version_name": old_version["version"]})
        image = row["image"]
        return {
            "id": row["id"], "pipeline_name": pipeline["name"] if pipeline else "",
            "pipeline_version_id": row["pipeline_version_id"],
            "pipeline_version_name": version["version"] if version else None,
            "workspace_id": row["workspace_id"], "workspace_name": workspace["name"] if workspace else None,
            "status": row["status"], "error": row["error"],
            "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
            "created_by": None, "created_on_version": CREATED_ON_VERSION,
            "engine_config": wire, "user_images": [], "docker_run_variables": {},
            "engine_url": image, "pipeline_url": image, "helm": _helm(row),
            "edge_bundles": bundles or {}, "replaces": replaced,
        }  # no field beyond the SDK's: its PipelinePublish(**answer) refuses unknown keywords

    def image(self, publish_id: int) -> dict[str, Any]:
        """Ours: what the push made and measured (the SDK's publish answer has no field for it)."""
        row = self.row(publish_id)
        return {"id": publish_id, "status": row["status"], "image": row["image"], "digest": row["digest"],
                "bytes": row["image_bytes"], "publish_seconds": row["publish_seconds"], "chart": row["chart"],
                "chart_version": row["chart_version"], "chart_digest": row["chart_digest"],
                "chart_seconds": row["chart_seconds"]}

    def list(self, pipeline_id: int | None, workspace_id: int | None) -> dict[str, Any]:
        where, params = ("pipeline_id = ?", (pipeline_id,)) if pipeline_id is not None else (
            ("workspace_id = ?", (workspace_id,)) if workspace_id is not None else ("1=1", ()))
        rows = self.db.all(f"SELECT * FROM publishes WHERE {where} ORDER BY id", params)
        ids = [r["id"] for r in rows]
        edges = [e for e in self._edge_rows() if e["publish_id"] in ids]
        return {"publishes": [self.answer(r) for r in rows], "edges": [self._edge(e, ours=False) for e in edges]}

    # -- edges -------------------------------------------------------------------------
    def _edge_rows(self, publish_id: int | None = None) -> list[dict[str, Any]]:
        if publish_id is None:
            return self.db.all("SELECT * FROM edges ORDER BY created_at")
        return self.db.all("SELECT * FROM edges WHERE publish_id = ? ORDER BY created_at", (publish_id,))

    def _edge(self, e: dict[str, Any], ours: bool = True) -> dict[str, Any]:
        """The SDK's `Edge` fields, and with `ours` whether it joined, what it shipped and dropped (the SDK
        reads list_edges_by_publish_id's edges with from_dict, which keeps extra fields, but builds
        list_publishes_for_pipeline's with Edge(**edge), which refuses them)."""
        config = json.loads(self.row(e["publish_id"])["engine_config"])
        out = {"id": e["id"], "name": e["name"], "tags": json.loads(e["tags"]), "cpus": float(config.get("cpus", 1.0)),
               "memory": config.get("memory", "1Gi"), "created_at": iso(e["created_at"]),
               "created_on_version": CREATED_ON_VERSION, "should_run_publish": e["publish_id"], "spiffe_id": None}
        if ours:
            out.update(joined_at=iso(e["joined_at"]), shipped_rows=e["shipped_rows"], dropped_rows=e["dropped_rows"])
        return out

    def _bundle(self, e: dict[str, Any], row: dict[str, Any]) -> str:
        config = json.loads(row["engine_config"])
        return EdgeBundle(EDGE_NAME=e["name"], OPSCENTER_HOST=self.centre_url, PIPELINE_URL=row["image"] or "",
                          JOIN_TOKEN=self.secrets.open(e["join_token"]),
                          OCI_REGISTRY=(row["image"] or "").split("/", 1)[0],
                          CONFIG_CPUS=str(max(1, round(float(config.get("cpus", 1.0)))))).encode()

    def _bundles(self, publish_id: int, waiting_only: bool) -> dict[str, str]:
        row = self.row(publish_id)
        return {e["name"]: self._bundle(e, row) for e in self._edge_rows(publish_id)
                if not waiting_only or e["joined_at"] is None}

    def add_edge(self, publish_id: int, name: str, tags: list[str]) -> dict[str, Any]:
        """A new edge of a published publish, its bundle in `edge_bundles` (201)."""
        row = self.row(publish_id, "pipeline_publish_id")
        if row["status"] != "Published":
            raise Conflict(f"pipeline_publish_id: publish {publish_id} is {row['status']}, not Published: wait for "
                           "it (get_publish_status) before adding edges")
        token = secrets.token_urlsafe(32)
        edge = {"id": str(uuid.uuid4()), "name": name, "publish_id": publish_id, "tags": dumps(tags),
                "join_token": self.secrets.seal(token), "join_sha256": sha(token), "created_at": time.time()}
        try:
            with self.db.tx() as c:
                c.execute("INSERT INTO edges (id, name, publish_id, tags, join_token, join_sha256, created_at) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(edge.values()))
        except IntegrityError:
            raise Conflict(f"name: an edge named {name!r} already exists; edge names are unique: remove it "
                           "(remove_edge) or pick another name") from None
        return self.answer(row, {name: self._bundle({**edge, "joined_at": None}, row)})

    def remove_edge(self, name: str) -> None:
        with self.db.tx() as c:
            if c.execute("DELETE FROM edges WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"name: no edge named {name!r}")

    def list_edges(self, publish_id: int) -> dict[str, Any]:
        self.row(publish_id, "publish_id")
        return {"edges": [self._edge(e) for e in self._edge_rows(publish_id)]}


def versions_of(steps: list[dict[str, Any]]) -> dict[str, set[int]]:
    """model name -> its version ids among `steps`: a '<name>-<id>' sidekick key keeps that version's own settings."""
    out: dict[str, set[int]] = {}
    for step in steps:
        out.setdefault(step["name"], set()).add(step["model_version_id"])
    return out
