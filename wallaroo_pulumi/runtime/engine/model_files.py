"""A model's files on this host: its artifact unpacked once into `models/<sha>/` (readable by the
sandboxed workers' uids), its missing requirements installed once, confined, into `deps/<hash>/`;
on an edge, taken from what the publish installed into the image (`baked`), never installed."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from pathlib import Path

import anyio

from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.sandbox.sandbox import Sandbox
from wallaroo_pulumi.runtime.sidekick.loader import unpack_artifact
from wallaroo_pulumi.runtime.sidekick.requirements import (
    RequirementsError,
    ensure_requirements,
    missing_in,
    read_requirements,
    unmet_with,
)
from wallaroo_pulumi.runtime.store.artifacts import ArtifactStore


class ModelFiles:
    def __init__(self, data_dir: Path, artifacts: ArtifactStore, sandbox: Sandbox, baked: Path | None = None) -> None:
        """`baked`: an edge's folder of requirements installed at publish, `<baked>/<artifact sha>/`."""
        self.artifacts = artifacts
        self.baked = baked
        self.sandbox = sandbox
        self.models_dir = data_dir / "models"
        self.deps_dir = data_dir / "deps"
        self.models_dir.mkdir(exist_ok=True)
        for leftover in self.models_dir.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self._unpack_locks: dict[str, asyncio.Lock] = {}
        self._req_lock = asyncio.Lock()

    def unpack(self, sha: str) -> Path:
        """The unpacked model folder of artifact `sha` (blocking: for a thread)."""
        final = self.models_dir / sha
        marker = final / ".model_root"
        if marker.exists():
            return final / marker.read_text().strip()
        zip_path = self.artifacts.fetch(sha)
        if not zip_path.exists():
            raise WallarooError(f"artifact {sha} is missing from the artifact store")
        tmp = self.models_dir / f".tmp-{sha[:12]}-{uuid.uuid4().hex}"
        tmp.mkdir()
        root = Path(unpack_artifact(zip_path, tmp))
        rel = root.resolve().relative_to(tmp.resolve())
        (tmp / ".model_root").write_text(str(rel) or ".")
        _readable(tmp)
        if final.exists() and not marker.exists():  # a half-finished earlier unpack (no marker): replace it
            shutil.rmtree(final, ignore_errors=True)
        try:
            tmp.rename(final)
        except OSError:  # unpacked meanwhile by another caller (a publish beside a deploy): theirs stays
            shutil.rmtree(tmp, ignore_errors=True)
        return final / rel

    async def model_dir(self, sha: str) -> Path:
        """The unpacked model folder of artifact `sha`."""
        lock = self._unpack_locks.setdefault(sha, asyncio.Lock())
        async with lock:
            return await anyio.to_thread.run_sync(self.unpack, sha)

    async def requirements(self, model_dir: Path, extra: list[str]) -> list[Path]:
        """Folders to put on the model's PYTHONPATH for requirements this environment lacks."""
        lines = read_requirements(model_dir, extra)
        if not lines:
            return []
        if self.baked is not None:
            return self._baked(model_dir, lines)
        async with self._req_lock:
            return await anyio.to_thread.run_sync(
                lambda: ensure_requirements(lines, self.deps_dir, sandbox=self.sandbox, cwd=model_dir))


    def _baked(self, model_dir: Path, lines: list[str]) -> list[Path]:
        """An edge installs nothing (it may have no network): what the image's environment lacks must be
        in the folder the publish installed the model's requirements into (D56)."""
        assert self.baked is not None
        if not missing_in(sys.executable, lines):
            return []  # as at a deploy: nothing put before the image's own packages
        folder = self.baked / model_dir.resolve().relative_to(self.models_dir.resolve()).parts[0]
        unmet = unmet_with(folder, lines)
        if unmet:
            raise RequirementsError(
                f"requirements {unmet} are neither in this image nor installed into it at publish, and an edge "
                "installs nothing: publish again (a publish installs every requirement of each step into the image)")
        return [folder]


def _readable(folder: Path) -> None:
    """Folders 0755 and files 0644 (0755 if executable): a worker running under a uid of its own
    reads them; the data directory around them stays closed (0700, and outside its private root)."""
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
