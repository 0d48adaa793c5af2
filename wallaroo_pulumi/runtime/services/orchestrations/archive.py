"""An orchestration's requirements as a task pod fetches them (D60): the folders packaging installed
(with the task Python, cached by hash) in one tar.gz, one top-level folder per requirement folder and a
`python.txt` naming the Python minor version they were installed for. Built once per set of folders."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

PYTHON_FILE = "python.txt"


def requirements_archive(deps: tuple[Path, ...], version: tuple[int, int], cache: Path) -> Path:
    """The archive of `deps` (installed for Python `version`), built into `cache` unless it is there."""
    name = hashlib.sha256("\n".join([*map(str, deps), f"{version[0]}.{version[1]}"]).encode()).hexdigest()[:32]
    path = cache / f"{name}.tar.gz"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".building-")
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            marker = f"{version[0]}.{version[1]}\n".encode()
            info = tarfile.TarInfo(PYTHON_FILE)
            info.size = len(marker)
            tar.addfile(info, io.BytesIO(marker))
            for i, folder in enumerate(deps):
                tar.add(folder, arcname=str(i), filter=_no_markers)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _no_markers(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """The installer's own files (`.complete`) stay home; owners are the pod's, not ours."""
    if Path(info.name).name.startswith(".complete"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
