"""Deterministic BYOP artifacts: the same folder gives the same bytes (and sha256) on any machine (D13)."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".venv", "venv"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """A packed model: the zip on disk, its sha256 and size."""

    path: Path
    sha256: str
    size: int


def _files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(names):
            if not name.endswith(_SKIP_SUFFIXES) and name != ".DS_Store":
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pack(source: Path, dest_dir: Path | None = None) -> Artifact:
    """Zip `source` (a folder) deterministically, or take `source` as is when it is already a zip."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"model path {source} does not exist; expected a folder of Python files or a .zip")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"model path {source} is a file but not a zip; expected a folder or a .zip")
        return Artifact(source, file_sha256(source), source.stat().st_size)
    files = _files(source)
    if not any(f.suffix == ".py" for f in files):
        raise ValueError(f"model folder {source} has no .py file; a BYOP model needs its Python code")
    fd, tmp = tempfile.mkstemp(prefix="wallaroo-model-", suffix=".zip", dir=dest_dir)
    os.close(fd)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), date_time=_EPOCH)
            executable = path.stat().st_mode & stat.S_IXUSR
            info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
    out = Path(tmp)
    return Artifact(out, file_sha256(out), out.stat().st_size)


def content_sha256(source: Path) -> str:
    """The sha256 `pack(source)` would give, without keeping the zip (what `preview` uses)."""
    artifact = pack(source)
    if artifact.path != Path(source):
        artifact.path.unlink(missing_ok=True)
    return artifact.sha256
