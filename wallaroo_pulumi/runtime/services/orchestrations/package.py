"""An orchestration zip, checked before it is stored (a `main.py`, at most one
`requirements.txt`, no entry escaping its folder) and unpacked once into
`orchestrations/<sha>/`, readable by the tasks' uids."""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
import zipfile
from pathlib import Path

from wallaroo_pulumi.runtime.core.errors import BadRequest
from wallaroo_pulumi.runtime.sidekick.loader import UnsafeArtifactError, unpack_artifact

ENTRY = "main.py"
REQUIREMENTS = "requirements.txt"


class OrchestrationRejected(BadRequest):
    """The uploaded file is not an orchestration zip."""

    source = "orchestrations"


def check_zip(path: Path) -> str:
    """The folder (inside the zip, '.' for its top) holding the entry point: `main.py` at the top,
    else the shallowest `*/main.py`, as the Wallaroo SDK documents it."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            links = [i.filename for i in zf.infolist() if (i.external_attr >> 16) & 0o170000 == 0o120000]
    except (zipfile.BadZipFile, OSError) as exc:
        raise OrchestrationRejected(f"file: expected a zip archive holding main.py, got an unreadable one ({exc})") from None
    escaping = [n for n in names if n.startswith(("/", "\\")) or ".." in n.replace("\\", "/").split("/")
                or (len(n) > 1 and n[1] == ":")]
    if escaping or links:
        bad = (escaping or links)[0]
        raise OrchestrationRejected(f"file: entry {bad!r} would land outside the orchestration's folder "
                                    f"({'a symlink' if links else 'an absolute or .. path'}); zip the folder's files only")
    requirements = sorted(n for n in names if posixpath.basename(n) == REQUIREMENTS)
    if len(requirements) > 1:
        raise OrchestrationRejected(f"file: the zip holds {len(requirements)} requirements.txt files "
                                    f"({', '.join(requirements)}); at most one is allowed")
    entries = sorted((n for n in names if posixpath.basename(n) == ENTRY), key=lambda n: (n.count("/"), n))
    if not entries:
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else "nothing"
        raise OrchestrationRejected(f"file: no main.py in the zip (it holds {listed}); the task runs main.py")
    return posixpath.dirname(entries[0]) or "."


def unpack(zip_path: Path, dest_root: Path, sha: str, entry: str) -> Path:
    """The orchestration's folder (where main.py is), unpacked once per content."""
    final = dest_root / sha
    if (final / ".complete").exists():
        return final / entry
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = dest_root / f".tmp-{sha[:12]}-{uuid.uuid4().hex}"
    try:
        unpack_artifact(zip_path, tmp)
    except UnsafeArtifactError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OrchestrationRejected(f"file: {exc}") from None
    (tmp / ".complete").write_text(entry)
    for root, _dirs, files in os.walk(tmp):
        os.chmod(root, 0o755)
        for name in files:
            item = os.path.join(root, name)
            os.chmod(item, 0o755 if os.stat(item).st_mode & 0o100 else 0o644)
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:  # unpacked by another upload of the same content meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return final / entry
