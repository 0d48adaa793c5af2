"""The Python that runs orchestration tasks: one that has the `wallaroo` SDK (Wallaroo's task
images ship it, and an orchestration's requirements.txt must not name it). Probed once: its
version, the folders it reads (what a task's sandbox must let it read) and whether the SDK is there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property

#: Environment variable naming the task Python when --task-python is not given.
TASK_PYTHON_ENV = "WALLAROO_TASK_PYTHON"

_PROBE = ("import json, sys, importlib.util as u; print(json.dumps({'version': list(sys.version_info[:2]), "
          "'paths': [sys.prefix, sys.base_prefix, sys.exec_prefix, *[p for p in sys.path if p]], "
          "'sdk': u.find_spec('wallaroo') is not None}))")


@dataclass(frozen=True)
class Probe:
    version: tuple[int, int]
    paths: tuple[str, ...]
    sdk: bool


class TaskPython:
    def __init__(self, executable: str | None = None) -> None:
        chosen = executable or os.environ.get(TASK_PYTHON_ENV) or sys.executable
        found = shutil.which(chosen)
        if found is None:
            raise ValueError(f"task_python: {chosen!r} is not an executable Python")
        self.executable = os.path.abspath(found)  # not resolved: a venv's python is a symlink that means the venv

    @cached_property
    def probe(self) -> Probe:
        done = subprocess.run([self.executable, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"task_python {self.executable} does not run: {done.stderr.strip()[-500:]}")
        data = json.loads(done.stdout)
        paths = [p for p in data["paths"] if os.path.exists(p)]
        return Probe(tuple(data["version"]), tuple(dict.fromkeys(paths)), bool(data["sdk"]))

    def describe(self) -> str:
        p = self.probe
        sdk = "with the wallaroo SDK" if p.sdk else "WITHOUT the wallaroo SDK (wallaroo.Client() fails in tasks)"
        return f"{self.executable} (Python {p.version[0]}.{p.version[1]}, {sdk})"
