"""Content-addressed artifact store, `artifacts/sha256/<hex>`; uploads stream into `artifacts/tmp/` and are renamed into place."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
import zipfile
from pathlib import Path

from wallaroo_pulumi.runtime.store.fsync import fsync_dir


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the {limit} byte limit")
        self.limit = limit


class ArtifactWriter:
    """Writes one upload to a temp file, hashing as it goes."""

    def __init__(self, store: ArtifactStore, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.tmp_path = store.tmp_dir / f"upload-{uuid.uuid4().hex}"
        self._file = open(self.tmp_path, "wb", buffering=0)
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise UploadTooLarge(self.limit)
        self._hash.update(data)
        self._file.write(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> tuple[str, Path]:
        """fsync + atomic rename into `sha256/<hex>`; returns (sha, path)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.closed = True
        sha = self.sha256
        final = self.store.path_for(sha)
        if final.exists():
            self.tmp_path.unlink(missing_ok=True)
        else:
            os.replace(self.tmp_path, final)
            fsync_dir(final.parent)
        self.store.publish(sha, final)
        return sha, final

    def abort(self) -> None:
        if not self.closed:
            self._file.close()
            self.closed = True
        self.tmp_path.unlink(missing_ok=True)


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "sha256"
        self.tmp_dir = root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        # Anything left in tmp/ is an upload killed mid-way: drop it.
        for leftover in self.tmp_dir.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        self._lock = threading.Lock()

    def writer(self, limit: int) -> ArtifactWriter:
        return ArtifactWriter(self, limit)

    def path_for(self, sha: str) -> Path:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return self.blob_dir / sha

    def exists(self, sha: str) -> bool:
        return self.path_for(sha).exists()

    def delete(self, sha: str) -> None:
        self.path_for(sha).unlink(missing_ok=True)

    def publish(self, sha: str, path: Path) -> None:
        """A committed artifact becomes visible to every replica (here: it already is)."""
        return None

    def fetch(self, sha: str) -> Path:
        """The local file of artifact `sha` (it may not exist: callers check)."""
        return self.path_for(sha)



def validate_byop_zip(path: Path) -> list[str]:
    """The artifact must be a zip holding at least one .py file; returns its names.

    Raises ValueError with a message fit for a 400.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(
            "file: not a zip archive; a BYOP (framework 'custom') model is a zip of Python files "
            "(classes extending mac.inference.Inference and InferenceBuilder) plus artifacts"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"file: unreadable zip archive ({exc})") from exc
    for name in names:
        if name.startswith("/") or ".." in Path(name).parts:
            raise ValueError(f"file: zip entry {name!r} escapes the archive root")
    if not any(n.endswith(".py") for n in names):
        raise ValueError("file: the zip holds no .py file; a BYOP model needs its Python code")
    return names
