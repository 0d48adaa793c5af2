"""Where sidekick workers run. A `Placement` reserves the resources of one worker, says how to
launch it, and bounds how far a step may scale; `LocalPlacement` runs each worker as a local
process pinned round-robin to this server's CPUs and GPUs."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import glob
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from wallaroo_pulumi.runtime.sidekick.autoscale import ScalePolicy
from wallaroo_pulumi.runtime.sidekick.errors import SidekickLoadError
from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec

log = logging.getLogger("wallaroo.sidekick")

WORKER_MODULE = "wallaroo_pulumi.runtime.sidekick.worker"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Reservation:
    """The resources held for one worker."""

    cpu_ids: tuple[int, ...] = ()
    gpu_ids: tuple[str, ...] = ()


class KernelLimits(Protocol):
    """A worker's limits as the kernel holds them (its cgroups), for the supervisor to read."""

    memory_limited: bool  # the kernel kills it past its memory: no watcher needed

    def oom_kills(self) -> int: ...

    def stats(self) -> dict[str, int]: ...

    def kill(self, timeout: float = 5.0) -> None: ...  # everything in its cgroups, however it forked


@dataclass(frozen=True)
class Launch:
    """How to start one worker: its command line, its whole environment and its working directory;
    ``kernel``: its cgroups, where the kernel holds its limits; ``limits``: what holds each one."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)  # holds the model's credentials
    cwd: str | None = None
    kernel: KernelLimits | None = None
    limits: dict[str, object] = field(default_factory=dict)


class Placement(abc.ABC):
    """Decides where the workers of a step run; one per engine, shared by all its pools."""

    @abc.abstractmethod
    async def reserve(self, spec: SidekickSpec) -> Reservation:
        """Hold the resources of one more worker of ``spec`` (kept across its restarts)."""

    @abc.abstractmethod
    async def release(self, reservation: Reservation) -> None:
        """Give back what `reserve` held, once its worker is stopped."""

    @abc.abstractmethod
    def launch(self, spec: SidekickSpec, reservation: Reservation) -> Launch:
        """The command, environment and directory that start a worker of ``spec`` on ``reservation``."""

    @abc.abstractmethod
    def fit(self, spec: SidekickSpec, policy: ScalePolicy) -> ScalePolicy | None:
        """``policy`` with its maximum lowered to the workers of ``spec`` there is room for;
        None when there is room for no more than its minimum (the pool keeps a fixed size)."""


def available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))  # pragma: no cover - non-Linux


def visible_gpus() -> list[str]:
    """Device ids this server may hand out: its own CUDA_VISIBLE_DEVICES (what the operator, or a
    device plugin, gave it), else the GPUs the NVIDIA driver shows (``/proc/driver/nvidia/gpus``,
    ``/dev/nvidiaN``, else ``nvidia-smi -L``); none on a machine without them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    found = glob.glob("/proc/driver/nvidia/gpus/*") or [
        p for p in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", p)
    ]
    if not found and shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                found = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    return [str(i) for i in range(len(found))]


#: The extended resource a GPU is, in Kubernetes' words (the scheduler's reason names it).
GPU_RESOURCE = "nvidia.com/gpu"


class InsufficientGPUs(SidekickLoadError):  # noqa: N818 - Kubernetes' own word for it
    """A step asks for more GPUs than this machine has, and CPU fallback is not allowed."""


def insufficient_gpus(step_name: str, wanted: int, visible: int) -> InsufficientGPUs:
    """The scheduler's words (``0/1 nodes are available: 1 Insufficient nvidia.com/gpu``), then ours."""
    return InsufficientGPUs(
        f"0/1 nodes are available: 1 Insufficient {GPU_RESOURCE}: step {step_name!r} asks for {wanted} GPU(s) and "
        f"this machine has {visible} visible (CUDA_VISIBLE_DEVICES, else the NVIDIA driver's). Lower the step's "
        "sidekick gpus, run the runtime where the GPUs are, or start it with --allow-gpu-fallback "
        "(WALLAROO_ALLOW_GPU_FALLBACK=1) to run such steps on CPU",
        step_name=step_name,
    )


class LocalPlacement(Placement):
    """Workers as local processes: ``ceil(cpus)`` cores and ``gpus`` devices each, handed out
    round-robin over what this server may use, so replicas spread out. Nothing is held between
    reservations, so `release` has nothing to give back.

    A step asking for more GPUs than are visible is refused (`InsufficientGPUs`, the Kubernetes
    scheduler's reason), unless ``allow_gpu_fallback``: then its workers get the GPUs there are
    (none on a machine without) and run on CPU for the rest; it is never handed a device that
    does not exist."""

    def __init__(self, *, allow_gpu_fallback: bool = False) -> None:
        self._cpu_cursor = 0
        self._gpu_cursor = 0
        self.allow_gpu_fallback = allow_gpu_fallback

    async def reserve(self, spec: SidekickSpec) -> Reservation:
        return Reservation(cpu_ids=tuple(self._pick_cpus(spec.cpus)), gpu_ids=tuple(self._pick_gpus(spec)))

    async def release(self, reservation: Reservation) -> None:
        return None

    def launch(self, spec: SidekickSpec, reservation: Reservation) -> Launch:
        argv = [
            # -P: the model folder (our cwd) must not shadow the modules the worker imports.
            sys.executable, "-P", "-m", WORKER_MODULE,
            "--model-dir", str(spec.model_dir), "--name", spec.step_name,
            "--cpu-affinity", ",".join(map(str, reservation.cpu_ids)),
            "--env-names", ",".join(sorted(spec.env)),
            *(["--scratch-size", spec.scratch_size] if spec.scratch_size else []),
            *(["--concurrency", str(spec.concurrency)] if spec.concurrency else []),
        ]
        cwd = str(spec.model_dir) if Path(spec.model_dir).is_dir() else None
        return Launch(argv, build_env(spec, list(reservation.gpu_ids), len(reservation.cpu_ids)), cwd)

    def fit(self, spec: SidekickSpec, policy: ScalePolicy) -> ScalePolicy | None:
        """A GPU step grows only onto GPUs of its own: a second copy of a model on a device that
        already holds one would run it out of memory. Explicit ``gpu_ids`` pin every worker to
        the same devices, so such a step does not grow at all."""
        if spec.gpus == 0:
            return policy
        visible = len(visible_gpus())
        fits = policy.minimum if spec.gpu_ids is not None else visible // spec.gpus
        if fits >= policy.maximum:
            return policy
        if fits <= policy.minimum:
            log.warning("step %r: not autoscaling: each worker needs %d GPU(s) of its own and the %s leave room for "
                        "no more than the minimum of %d", spec.step_name, spec.gpus,
                        "gpu_ids given" if spec.gpu_ids is not None else f"{visible} visible", policy.minimum)
            return None
        log.warning("step %r: autoscale_max %d lowered to %d: each worker needs %d GPU(s) of its own and %d are visible",
                    spec.step_name, policy.maximum, fits, spec.gpus, visible)
        return dataclasses.replace(policy, maximum=fits)

    def _pick_cpus(self, cpus: float) -> list[int]:
        """``ceil(cpus)`` cores (at most all available), round-robin across calls."""
        available = available_cpus()
        n = min(max(1, math.ceil(cpus)), len(available))
        start = self._cpu_cursor % len(available)
        self._cpu_cursor += n
        return sorted(available[(start + i) % len(available)] for i in range(n))

    def _pick_gpus(self, spec: SidekickSpec) -> list[str]:
        """``spec.gpus`` device ids: the caller's ``gpu_ids``, else round-robin over visible GPUs."""
        if spec.gpu_ids is not None:
            return [str(i) for i in spec.gpu_ids]
        if spec.gpus == 0:
            return []
        visible = visible_gpus()
        if len(visible) < spec.gpus:
            if not self.allow_gpu_fallback:
                raise insufficient_gpus(spec.step_name, spec.gpus, len(visible))
            log.warning("step %r asks for %d GPU(s) but %d are visible: running it with %s (GPU fallback allowed)",
                        spec.step_name, spec.gpus, len(visible),
                        f"GPU(s) {','.join(visible)} and CPU" if visible else "CPU only")
            return list(visible)
        start = self._gpu_cursor % len(visible)
        self._gpu_cursor += spec.gpus
        return [visible[(start + i) % len(visible)] for i in range(spec.gpus)]


def _package_roots() -> list[str]:
    roots = [str(Path(__file__).resolve().parents[3])]
    with contextlib.suppress(Exception):
        import mac

        roots.append(str(Path(mac.__file__).resolve().parents[1]))
    return list(dict.fromkeys(roots))


def build_env(spec: SidekickSpec, gpu_ids: list[str], threads: int) -> dict[str, str]:
    """The worker's whole environment: a minimal base plus ``spec.env``, nothing else of this
    server's environment (so neither its secrets nor another model's reach the worker)."""
    tmp = os.environ.get("TMPDIR") or tempfile.gettempdir()
    env: dict[str, str] = {
        "PATH": os.environ.get("PATH") or os.defpath,
        "HOME": os.environ.get("HOME") or tmp,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "TMPDIR": tmp,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for var in THREAD_VARS:
        env[var] = str(threads)
    env.update(spec.env)  # the model may tune thread counts; it cannot escape the limits below
    paths = _package_roots() + [str(p) for p in spec.extra_pythonpath]
    if spec.env.get("PYTHONPATH"):
        paths += spec.env["PYTHONPATH"].split(os.pathsep)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    devices = ",".join(gpu_ids)
    env["CUDA_VISIBLE_DEVICES"] = devices
    env["NVIDIA_VISIBLE_DEVICES"] = devices
    return env
