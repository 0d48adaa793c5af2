"""A run of the built-in `llm-listener` as a task like the others (D58): `task_main` on the runtime's own
Python in a box of its own (or a Job), its memory held by the kernel at `max_memory_mb` plus what the
interpreter and listener model take, its calls back made with the run's own key."""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import asdict, dataclass
from typing import Any

from wallaroo_pulumi.runtime.sandbox.sandbox import Bounds
from wallaroo_pulumi.runtime.services.orchestrations.runner import RUN_BOUNDS, Launch
from wallaroo_pulumi.runtime.sidekick import SidekickSpec
from wallaroo_pulumi.runtime.sidekick.placement import build_env

from .engine import ListenerArgs
from .executor import ListenerModelRef

MODULE = "wallaroo_pulumi.runtime.services.listeners.task_main"
SPEC = "listener-run.json"
#: What a run's process takes before its pages: the interpreter, pyarrow, the listener model (measured: D58).
BASE_MB = 1024


@dataclass(frozen=True)
class RunSpec:
    """What `task_main` is told: its run, its task and the listener model the runtime resolved."""

    run_id: str
    task: dict[str, Any]
    model: dict[str, Any]
    mode: str


def memory_mb(args: ListenerArgs) -> int:
    return int(BASE_MB + args.max_memory_mb)


def launch(run_id: str, task: dict[str, Any], args: ListenerArgs, ref: ListenerModelRef, mode: str) -> Launch:
    """The run's process: `python -P -m task_main SPEC` in its scratch, reading the listener's folders."""
    model = {"name": ref.name, "version": ref.version, "model_dir": str(ref.model_dir), "sha": ref.sha,
             "scorer": ref.scorer, "env": ref.env, "extra_pythonpath": [str(p) for p in ref.extra_pythonpath]}
    spec = RunSpec(run_id, {k: task[k] for k in ("id", "name", "workspace_id", "args")}, model,
                   "scorer" if mode == "scorer" else "inprocess")
    env = build_env(SidekickSpec(step_name=f"listener-{ref.name}", model_version=ref.version, model_dir=ref.model_dir,
                                 env=ref.env, extra_pythonpath=list(ref.extra_pythonpath)), [], 1)
    env = {k: v for k, v in env.items() if k not in ("HOME", "TMPDIR")}  # the run's scratch is both
    bounds = Bounds(cpus=RUN_BOUNDS.cpus, memory_bytes=memory_mb(args) * 2**20, max_processes=RUN_BOUNDS.max_processes)
    return Launch(argv=[sys.executable, "-P", "-m", MODULE, SPEC], what="the llm-listener run",
                  of=f"(listener model {ref.name} version {ref.version})", env=env,
                  read=[ref.model_dir, *ref.extra_pythonpath], files={SPEC: json.dumps(asdict(spec))}, bounds=bounds,
                  local_only=ref.scorer is None)


def failure(lines: list[str], args: ListenerArgs, exit_error: str) -> str:
    """Why a run's process failed: its own last word (`failed: ...`), or how the kernel ended it."""
    for line in reversed(lines):
        _, _, said = line.partition(" F ")
        if said.startswith("failed: "):
            return said[len("failed: "):]
    if f"signal {int(signal.SIGKILL)}" in exit_error or "OOMKilled" in exit_error:
        return (f"max_memory_mb: the run's process was killed at its memory bound of {memory_mb(args)} MiB "
                f"(max_memory_mb {args.max_memory_mb:g} + {BASE_MB} MiB for the interpreter and listener model); "
                f"lower page_size or raise max_memory_mb")
    return exit_error
