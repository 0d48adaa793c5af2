"""A model's Python requirements: use the runtime's environment when it already
satisfies them, else `pip install --target <data>/deps/<hash>` once, confined like a
sidekick (its setup.py is the model's code), and put that folder on the sidekick's PYTHONPATH."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from wallaroo_pulumi.runtime.sandbox.sandbox import Sandbox

#: What of the runtime's environment pip gets: its own settings (index, trusted hosts) and proxies.
PIP_ENV_PREFIXES = ("PIP_",)
PIP_ENV_NAMES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


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


_SATISFIED_PROBE = """
import importlib.metadata as m, json, sys
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
out = []
for line in json.loads(sys.argv[1]):
    try:
        r = Requirement(line)
        ok = (r.marker is not None and not r.marker.evaluate()) or (
            not r.url and r.specifier.contains(m.version(r.name), prereleases=True))
    except Exception:
        ok = False
    out.append(ok)
print(json.dumps(out))
"""


def missing_in(python: str, lines: list[str]) -> list[str]:
    """The requirement lines (options left out) that the environment of `python` does not meet."""
    wanted = [line for line in lines if not line.startswith("-")]
    if not wanted or python == sys.executable:
        return [line for line in wanted if not satisfied(line)]
    done = subprocess.run([python, "-I", "-c", _SATISFIED_PROBE, json.dumps(wanted)], capture_output=True, text=True,
                          timeout=60)
    met = json.loads(done.stdout) if done.returncode == 0 else [False] * len(wanted)
    return [line for line, ok in zip(wanted, met, strict=True) if not ok]


def unmet_with(folder: Path, lines: list[str]) -> list[str]:
    """Of `lines` this environment lacks, those the packages in `folder` (a pip --target tree) do not meet either."""
    found = {d.metadata["Name"].lower().replace("_", "-"): d.version
             for d in importlib.metadata.distributions(path=[str(folder)]) if d.metadata["Name"]}
    unmet = []
    for line in (line for line in lines if not line.startswith("-") and not satisfied(line)):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            unmet.append(line)
            continue
        version = found.get(req.name.lower().replace("_", "-"))
        if req.url or version is None or not req.specifier.contains(version, prereleases=True):
            unmet.append(line)
    return unmet


def pip_env(home: Path) -> dict[str, str]:
    """pip's whole environment: nothing of the runtime's but pip's own settings and proxies."""
    env = {"PATH": os.environ.get("PATH") or os.defpath, "HOME": str(home), "TMPDIR": str(home),
           "LANG": os.environ.get("LANG") or "C.UTF-8", "PIP_NO_INPUT": "1", "PIP_NO_CACHE_DIR": "1"}
    env.update({k: v for k, v in os.environ.items() if k.startswith(PIP_ENV_PREFIXES) or k in PIP_ENV_NAMES})
    return env


def _local_paths(env: dict[str, str]) -> list[str]:
    """Local folders and files pip's settings name (PIP_FIND_LINKS=/opt/wheels, PIP_CERT=...): readable to pip."""
    tokens = (t.removeprefix("file://") for k, v in env.items() if k.startswith(PIP_ENV_PREFIXES) for t in v.split())
    return [t for t in tokens if os.path.isabs(t) and os.path.exists(t)]


def ensure_requirements(lines: list[str], deps_root: Path, *, sandbox: Sandbox, cwd: Path,
                        timeout_s: float = 900, python: str | None = None, python_read: tuple[str, ...] = (),
                        what: str = "model", every: bool = False, scratch_under: Path | None = None) -> list[Path]:
    """[] when nothing is missing, else [the folder holding the installed packages].

    Option lines (`--no-index`, `--find-links wheels/`, ...) go to pip, which runs in `cwd` (the model
    folder). The folder is the model's own: a requirement's setup.py runs the model's code, so what it
    leaves there must never be imported by another model. `python` (default: the runtime's) is the
    interpreter the packages are for (an orchestration task's), `python_read` the folders it reads.
    `every`: install every line, met here or not (a publish's image, whose environment is not this one).
    `scratch_under`: where pip's scratch (downloads, builds) goes instead of the temp dir (a pod's small /tmp).
    """
    python = python or sys.executable
    options = [line for line in lines if line.startswith("-")]
    missing = [line for line in lines if not line.startswith("-")] if every else missing_in(python, lines)
    if not missing:
        return []
    basis = "\n".join(sorted(missing)) + f"\n{sys.version_info[:2]}\n" + "\n".join(options) + f"\n{cwd}"
    if python != sys.executable:
        basis += f"\n{python}"
    key = hashlib.sha256(basis.encode()).hexdigest()[:24]
    target = deps_root / key
    if (target / ".complete").exists():
        return [target]
    deps_root.mkdir(parents=True, exist_ok=True)
    tmp = deps_root / f".{key}.{uuid.uuid4().hex}.tmp"
    box = sandbox.open(under=scratch_under)
    try:
        tmp.mkdir()
        box.give(tmp)
        req_file = box.scratch / "requirements.txt"
        req_file.write_text("\n".join(options + missing) + "\n")
        cmd = [python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
               "--target", str(tmp), "-r", str(req_file)]
        env = pip_env(box.scratch)
        argv, env, run_cwd = box.command(cmd, env, cwd=str(cwd), read=[cwd, *python_read, *_local_paths(env)],
                                           write=[tmp])
        returncode, output = _run(argv, env, run_cwd, timeout_s)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RequirementsError(f"pip install of {missing} did not finish within {timeout_s:.0f}s") from None
    finally:
        box.close()  # first: nothing it started may still write into tmp
    if returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join(output.strip().splitlines()[-8:])
        raise RequirementsError(f"pip could not install the {what}'s requirements {missing}: {tail}")
    sandbox.reclaim(tmp)
    marker = tmp / ".complete"
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()  # the install may have left one (a symlink, even): ours replaces it
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(missing) + "\n")
    try:
        os.replace(tmp, target)
    except OSError:  # another deploy finished the same install first
        shutil.rmtree(tmp, ignore_errors=True)
    return [target]


def _run(argv: list[str], env: dict[str, str], cwd: str, timeout_s: float) -> tuple[int, str]:
    """Run pip in a session of its own; on timeout kill the session (builds it started included)."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, output
