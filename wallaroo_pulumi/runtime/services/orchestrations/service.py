"""OrchestrationService: upload (the zip checked, stored by content), packaging in the
background (pending_packaging -> packaging -> ready | error, the error naming the requirement
and pip's reason), listing and lookup; the built-in llm-listener is listed beside the uploads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from wallaroo_pulumi.runtime.core.errors import NotFound, WallarooError
from wallaroo_pulumi.runtime.sandbox.sandbox import Sandbox
from wallaroo_pulumi.runtime.sidekick.requirements import RequirementsError, ensure_requirements, read_requirements
from wallaroo_pulumi.runtime.store.artifacts import ArtifactStore, ArtifactWriter
from wallaroo_pulumi.runtime.store.db import Database

from .archive import requirements_archive
from .package import check_zip, unpack
from .python import TaskPython
from .store import OrchestrationStore

log = logging.getLogger("wallaroo_pulumi.orchestrations")


class OrchestrationNotReady(WallarooError):
    status = 409
    source = "orchestrations"


@dataclass(frozen=True)
class Packaged:
    """What a task of a ready orchestration runs: main.py's folder and the folders of its requirements."""

    folder: Path
    deps: tuple[Path, ...]


class OrchestrationService:
    def __init__(self, db: Database, artifacts: ArtifactStore, sandbox: Sandbox, data_dir: Path,
                 python: TaskPython) -> None:
        self.store = OrchestrationStore(db)
        self.artifacts = artifacts
        self.sandbox = sandbox
        self.python = python
        self.root = data_dir / "orchestrations"
        self.deps_dir = data_dir / "deps"
        self._packaging: dict[str, asyncio.Task[None]] = {}
        self._packaged: dict[str, Packaged] = {}  # sha -> its files, once checked here: a run asks no pip again
        self._req_lock = asyncio.Lock()

    async def start(self) -> None:
        """Package again what a stopped runtime left half packaged."""
        for row in await asyncio.to_thread(self.store.pending):
            self._package_later(row["id"])

    async def stop(self) -> None:
        for t in list(self._packaging.values()):
            t.cancel()
        await asyncio.gather(*self._packaging.values(), return_exceptions=True)

    async def upload(self, *, workspace_id: int, name: str | None, writer: ArtifactWriter,
                     file_name: str | None) -> dict[str, Any]:
        """Check and store the zip; packaging goes on in the background (poll the status)."""
        try:
            entry = await anyio.to_thread.run_sync(check_zip, writer.tmp_path)
        except BaseException:
            writer.abort()
            raise
        size = writer.size
        sha, _ = await anyio.to_thread.run_sync(writer.commit)
        row = await asyncio.to_thread(lambda: self.store.create(
            name=name, file_name=file_name or "_", sha=sha, file_size=size, workspace_id=workspace_id, entry=entry))
        self._package_later(row["id"])
        return row

    def _package_later(self, oid: str) -> None:
        t = asyncio.create_task(self._package(oid), name=f"package-orchestration-{oid}")
        self._packaging[oid] = t
        t.add_done_callback(lambda _t: self._packaging.pop(oid, None))

    async def wait_packaged(self, oid: str) -> None:
        t = self._packaging.get(oid)
        if t is not None:
            await asyncio.gather(t, return_exceptions=True)

    async def _package(self, oid: str) -> None:
        store = self.store
        row = store.get(oid)
        if row is None:
            return
        await asyncio.to_thread(store.set_status, oid, "packaging")
        try:
            packaged = await self._files(row)
            log.info("orchestration %s (%s) is ready: %d requirement folder(s)", oid, row["name"], len(packaged.deps))
            await asyncio.to_thread(store.set_status, oid, "ready")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the status says why, the upload stays listed
            error = str(exc) if isinstance(exc, (RequirementsError, WallarooError)) else f"{type(exc).__name__}: {exc}"
            log.warning("orchestration %s failed to package: %s", oid, error)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(store.set_status, oid, "error", error)

    async def _files(self, row: dict[str, Any]) -> Packaged:
        zip_path = self.artifacts.fetch(row["sha"])
        folder = await anyio.to_thread.run_sync(unpack, zip_path, self.root, row["sha"], row["entry"])
        lines = read_requirements(folder)
        if not lines:
            return Packaged(folder, ())
        probe = await anyio.to_thread.run_sync(lambda: self.python.probe)
        async with self._req_lock:
            deps = await anyio.to_thread.run_sync(lambda: ensure_requirements(
                lines, self.deps_dir, sandbox=self.sandbox, cwd=folder, python=self.python.executable,
                python_read=probe.paths, what="orchestration"))
        return Packaged(folder, tuple(deps))

    # -- reads -------------------------------------------------------------
    def get(self, oid: Any, field: str = "id") -> dict[str, Any]:
        row = self.store.get(oid) if isinstance(oid, str) else None
        if row is None:
            raise NotFound(f"{field}: no orchestration {oid!r}", source="orchestrations")
        return row

    def find(self, oid: str) -> dict[str, Any] | None:
        return self.store.get(oid)

    def list(self, workspace_ids: list[int] | None = None) -> list[dict[str, Any]]:
        return self.store.list(workspace_ids)

    async def delete(self, oids: list[str], in_use: dict[str, list[str]]) -> int:
        """Remove these uploads (`in_use`: orchestration id -> its live tasks' ids, which refuse it);
        the bytes of the zips no upload holds any more, which are deleted."""
        rows = [self.get(oid, "orchestrations") for oid in oids]
        busy = {oid: tids for oid, tids in in_use.items() if tids}
        if busy:
            oid, tids = next(iter(busy.items()))
            raise OrchestrationNotReady(f"orchestrations: {oid} is used by task(s) {', '.join(tids)}; kill them first")
        freed = 0
        for row in rows:
            await self.wait_packaged(row["id"])
            await asyncio.to_thread(self.store.delete, row["id"])
            if not await asyncio.to_thread(self.store.sha_in_use, row["sha"]):
                freed += row["file_size"]
                self._packaged.pop(row["sha"], None)
                await asyncio.to_thread(self.artifacts.delete, row["sha"])
                await asyncio.to_thread(shutil.rmtree, self.root / row["sha"], True)
        return freed

    async def requirements_archive(self, oid: str) -> Path | None:
        """The requirement folders packaging installed for `oid`, as one archive a task pod fetches instead
        of asking a package index (None: it has no requirements); 409 unless it is ready."""
        self.get(oid, "id")
        deps = (await self.packaged(oid)).deps
        if not deps:
            return None
        version = (await asyncio.to_thread(lambda: self.python.probe)).version
        return await asyncio.to_thread(requirements_archive, deps, version, self.deps_dir.parent / "deps-archives")

    async def packaged(self, oid: str) -> Packaged:
        """The files a run of `oid` needs (cached after packaging); 409 unless it is ready."""
        row = self.get(oid, "orch_id")
        if row["status"] != "ready":
            why = f": {row['error']}" if row["error"] else "; wait until its status is ready"
            raise OrchestrationNotReady(f"orch_id: orchestration {oid} is {row['status']}{why}")
        found = self._packaged.get(row["sha"])
        if found is None or not all(p.exists() for p in (found.folder, *found.deps)):
            found = self._packaged[row["sha"]] = await self._files(row)
        return found
