"""A model's Python requirements: use the runtime's environment when it already
satisfies them, else `pip install --target <data>/deps/<hash>` once and put that
folder on the sidekick's PYTHONPATH."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement


class RequirementsError(Exception):
    pass


def read_requirements(model_dir: Path, extra: list[str] | None = None) -> list[str]:
    lines: list[str] = []
    req = model_dir / "requirements.txt"
    if req.exists():
        for raw in req.read_text(errors="replace").splitlines():
            line = raw.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    for item in extra or []:
        if item.strip() and item.strip() not in lines:
            lines.append(item.strip())
    return lines


def satisfied(line: str) -> bool:
    """True when this environment already has a distribution meeting `line`."""
    if line.startswith("-"):
        return False
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return False
    if req.marker is not None and not req.marker.evaluate():
        return True
    if req.url:
        return False
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return req.specifier.contains(version, prereleases=True)


def ensure_requirements(lines: list[str], deps_root: Path, timeout_s: float = 900, cwd: Path | None = None) -> list[Path]:
    """[] when nothing is missing, else [the folder holding the installed packages].

    Option lines (`--no-index`, `--find-links wheels/`, ...) go to pip, which runs in `cwd` (the model folder).
    """
    options = [line for line in lines if line.startswith("-")]
    missing = [line for line in lines if not line.startswith("-") and not satisfied(line)]
    if not missing:
        return []
    basis = "\n".join(sorted(missing)) + f"\n{sys.version_info[:2]}"
    if options:
        basis += "\n" + "\n".join(options) + f"\n{cwd}"
    key = hashlib.sha256(basis.encode()).hexdigest()[:24]
    target = deps_root / key
    if (target / ".complete").exists():
        return [target]
    deps_root.mkdir(parents=True, exist_ok=True)
    tmp = deps_root / f".{key}.{uuid.uuid4().hex}.tmp"
    req_file = deps_root / f".{key}.{uuid.uuid4().hex}.txt"
    req_file.write_text("\n".join(options + missing) + "\n")
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
        "--target", str(tmp), "-r", str(req_file),
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, cwd=str(cwd) if cwd else None,
            env={**os.environ, "PIP_NO_INPUT": "1"},
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RequirementsError(f"pip install of {missing} did not finish within {timeout_s:.0f}s") from None
    finally:
        req_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise RequirementsError(f"pip could not install the model's requirements {missing}: {tail}")
    (tmp / ".complete").write_text("\n".join(missing) + "\n")
    try:
        os.replace(tmp, target)
    except OSError:  # another deploy finished the same install first
        shutil.rmtree(tmp, ignore_errors=True)
    return [target]
