"""The asyncio supervisor of sidekick worker processes.

:class:`Sidekick` owns one worker (``python -m wallaroo_pulumi.runtime.sidekick.worker``)
for one model step: it spawns it with a clean environment and resource limits,
waits for READY, sends it one batch at a time, restarts the worker after a
crash, and stops it (with everything it spawned). :class:`SidekickPool` runs
N replicas of the same step and spreads requests over them.

Merging: a worker answers one batch at a time, so requests that arrive while it
is busy wait — and are then sent together as one batch of up to
``spec.max_batch_rows`` rows, and the answer is split back by row counts. An
LLM adapter sends the rows of a batch concurrently, so merging is what turns
many one-row requests into upstream concurrency instead of a queue. An idle
worker gets a request at once (merging never waits for more). When a merged
batch fails with a model error, answers with a different number of rows, or
crashes the worker (a poison request, or one batch too big for the memory cap),
its requests are sent again one by one, so one bad request fails alone. After a
crash the retries stop at the second request that crashes the worker alone: a
worker that dies on everything is not restarted once per request.

Isolation, because credentials reach a model only through its sidekick env:

- **Environment**: a minimal base (``PATH``, ``HOME``, ``LANG``, ``TMPDIR``,
  ``PYTHONPATH`` = our package + the model's installed requirements,
  ``PYTHONUNBUFFERED``, ``PYTHONDONTWRITEBYTECODE``, thread counts, GPU
  visibility) plus ``spec.env`` — nothing else of the server's environment,
  so neither the server's secrets nor another model's reach it.
- **CPU**: the worker pins itself (``sched_setaffinity``) to ``ceil(cpus)``
  cores, chosen round-robin over the cores this server may use so replicas
  spread out, and ``OMP/MKL/OPENBLAS_NUM_THREADS`` match.
- **Memory**: the Kubernetes quantity caps the resident memory of the worker
  and its children; past it the group is killed (``OOMKilled``) and restarted,
  as on Kubernetes (see :mod:`.memory` for why not ``RLIMIT_AS``).
- **GPUs**: ``CUDA_VISIBLE_DEVICES``/``NVIDIA_VISIBLE_DEVICES`` list exactly
  ``gpus`` device ids (``""`` when 0).
- **Process group**: ``start_new_session=True``; stopping kills the group.

Nothing the supervisor logs or raises carries a value of ``spec.env``: worker
stderr lines and worker error messages pass through an
:class:`~wallaroo_pulumi.runtime.sidekick.redact.EnvRedactor` first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import glob
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wallaroo_pulumi.deployment import parse_memory_quantity
from wallaroo_pulumi.runtime.sidekick import memory, protocol
from wallaroo_pulumi.runtime.sidekick.autoscale import Autoscaler, ScalePolicy
from wallaroo_pulumi.runtime.sidekick.redact import EnvRedactor

log = logging.getLogger("wallaroo.sidekick")

WORKER_MODULE = "wallaroo_pulumi.runtime.sidekick.worker"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_STOP_GRACE_S = 2.0
_REAP_TIMEOUT_S = 5.0
_MAX_BACKOFF_S = 30.0
_STDERR_TAIL = 20
_WATCH_INTERVAL_S = 0.1
_LEVELS = {
    "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
    "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL,
}


# -- the spec --------------------------------------------------------------------------
class SidekickSpec(BaseModel):
    """Everything needed to run one model step's worker."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    step_name: str = Field(min_length=1, description="model/step name, used in messages and the logger name")
    model_version: str
    model_dir: Path = Field(description="the unpacked BYOP folder")
    env: dict[str, str] = Field(default_factory=dict, repr=False,
                                description="this model's sidekick env only (may hold credentials)")
    cpus: float = Field(default=1.0, gt=0)
    memory: str | None = Field(
        default=None, description="Kubernetes quantity, e.g. '512Mi': the resident memory past which the worker is killed")
    gpus: int = Field(default=0, ge=0)
    gpu_ids: list[int] | None = Field(default=None, description="device ids to expose, when the caller allocates them")
    extra_pythonpath: list[Path] = Field(default_factory=list, description="the model's installed requirements")
    load_timeout_s: float = Field(default=120.0, gt=0)
    max_batch_rows: int = Field(default=64, ge=1, description="rows merged into one batch while the worker is busy")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory_quantity(value)  # raises ValueError naming what is expected
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"env name {name!r} is not a valid environment variable name")
        return env

    @model_validator(mode="after")
    def _gpu_ids(self) -> SidekickSpec:
        if self.gpu_ids is not None and len(self.gpu_ids) != self.gpus:
            raise ValueError(f"gpu_ids lists {len(self.gpu_ids)} device(s) but gpus is {self.gpus}; they must match")
        return self

    @property
    def memory_bytes(self) -> int | None:
        return parse_memory_quantity(self.memory) if self.memory is not None else None


# -- errors ----------------------------------------------------------------------------
class SidekickError(Exception):
    """Base of sidekick failures; ``step_name`` names the model step."""

    def __init__(self, message: str, *, step_name: str) -> None:
        super().__init__(message)
        self.step_name = step_name


class SidekickLoadError(SidekickError):
    """The model failed to load (its message quotes the Python error), or timed out loading."""


class SidekickCrashedError(SidekickError):
    """The worker process died while handling a request; it is being restarted."""


class SidekickPredictError(SidekickError):
    """The model's ``_predict`` (or the conversion of its answer) raised; the worker is fine."""

    def __init__(self, message: str, *, step_name: str, error_type: str | None = None) -> None:
        super().__init__(message, step_name=step_name)
        self.error_type = error_type


# -- resource selection ----------------------------------------------------------------
_cpu_cursor = 0
_gpu_cursor = 0


def _available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))  # pragma: no cover - non-Linux


def pick_cpus(cpus: float) -> list[int]:
    """``ceil(cpus)`` cores (at most all available), round-robin across calls."""
    global _cpu_cursor
    available = _available_cpus()
    n = min(max(1, math.ceil(cpus)), len(available))
    start = _cpu_cursor % len(available)
    _cpu_cursor += n
    return sorted(available[(start + i) % len(available)] for i in range(n))


def visible_gpus() -> list[str]:
    """Device ids this server may hand out: its own CUDA_VISIBLE_DEVICES, else the driver's GPUs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    found = glob.glob("/proc/driver/nvidia/gpus/*") or [
        p for p in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", p)
    ]
    return [str(i) for i in range(len(found))]


def pick_gpus(spec: SidekickSpec) -> list[str]:
    """``spec.gpus`` device ids: the caller's ``gpu_ids``, else round-robin over visible GPUs."""
    global _gpu_cursor
    if spec.gpu_ids is not None:
        return [str(i) for i in spec.gpu_ids]
    if spec.gpus == 0:
        return []
    visible = visible_gpus()
    if len(visible) < spec.gpus:
        if visible:
            log.warning("step %r asks for %d GPU(s) but only %d are visible", spec.step_name, spec.gpus, len(visible))
        return [str(i) for i in range(spec.gpus)]
    start = _gpu_cursor % len(visible)
    _gpu_cursor += spec.gpus
    return [visible[(start + i) % len(visible)] for i in range(spec.gpus)]


def _package_roots() -> list[str]:
    roots = [str(Path(__file__).resolve().parents[3])]
    with contextlib.suppress(Exception):
        import mac

        roots.append(str(Path(mac.__file__).resolve().parents[1]))
    return list(dict.fromkeys(roots))


def build_env(spec: SidekickSpec, gpu_ids: list[str], threads: int) -> dict[str, str]:
    """The worker's whole environment: a minimal base plus ``spec.env``, nothing else."""
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


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "an unknown exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Wait up to ``timeout`` for the worker itself to exit; True if it did.

    Polls ``returncode`` rather than awaiting ``proc.wait()``, which (Python 3.11)
    also waits for every pipe to close — and a model's own child processes may
    hold the stderr pipe open long after the worker is gone.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.returncode is None and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return proc.returncode is not None


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(protocol.HEADER.size)
    ftype, length = protocol.decode_header(header)
    payload = await reader.readexactly(length) if length else b""
    return ftype, payload


async def _write_frame(writer: asyncio.StreamWriter, ftype: bytes, payload: bytes | memoryview = b"") -> None:
    writer.write(protocol.encode_header(ftype, len(payload)))
    if payload:
        writer.write(payload)
    await writer.drain()


# -- one worker ------------------------------------------------------------------------
class Sidekick:
    """One worker process for one model step (one replica)."""

    def __init__(self, spec: SidekickSpec) -> None:
        self.spec = spec
        self._stderr_log = logging.getLogger(f"wallaroo.sidekick.{spec.step_name}")
        self._redact = EnvRedactor.for_env(spec.env)
        self._cpu_ids = pick_cpus(spec.cpus)
        self._gpu_ids = pick_gpus(spec)
        self._threads = len(self._cpu_ids)
        self._proc: asyncio.subprocess.Process | None = None
        self._state = "stopped"
        self._restarts = 0
        self._last_error: str | None = None
        self._lock = asyncio.Lock()
        self._launching: asyncio.Future[None] | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._guard_task: asyncio.Task[None] | None = None
        self._oom: tuple[asyncio.subprocess.Process, str] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._handled: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._busy = False
        self._busy_since = 0.0
        self._busy_total = 0.0  # seconds spent answering batches, for the pool's autoscaler
        self._tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._sender: asyncio.Task[None] | None = None

    # -- properties ---------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def state(self) -> str:
        """``starting`` | ``ready`` | ``failed`` | ``stopped``."""
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def busy_seconds(self) -> float:
        """Time spent answering batches so far, the batch in flight included."""
        if self._busy:
            return self._busy_total + (time.monotonic() - self._busy_since)
        return self._busy_total

    @property
    def waiting(self) -> int:
        """Requests queued behind the batch in flight."""
        return len(self._waiting)

    @property
    def cpu_ids(self) -> list[int]:
        return list(self._cpu_ids)

    @property
    def gpu_ids(self) -> list[str]:
        return list(self._gpu_ids)

    def __repr__(self) -> str:
        return f"Sidekick(step={self.spec.step_name!r}, state={self._state!r}, pid={self.pid}, restarts={self._restarts})"

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn the worker and wait for READY; raise :class:`SidekickLoadError` on failure or timeout."""
        if self._state == "ready" and self.pid is not None:
            return
        if self._launching is not None and not self._launching.done():
            await asyncio.wait({self._launching})  # a restart in progress
            if self._state == "ready":
                return
        if self._restart_task is not None and not self._restart_task.done():
            self._restart_task.cancel()  # a restart backing off: this start replaces it
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart_task
        self._stopping = False
        await self._attempt()

    async def _attempt(self) -> None:
        # Not shielded: cancelling start() (or stop() cancelling a restart) cancels the launch,
        # which kills the half-started worker. Requests wait on the future without cancelling it.
        launching = self._launching = asyncio.ensure_future(self._launch())
        try:
            await launching
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if launching.cancelled() and task is not None and not task.cancelling():
                # stop() cancelled the launch, not our caller: report it as an error, not a cancellation.
                raise SidekickLoadError(f"sidekick of step {self.spec.step_name!r} was stopped while loading",
                                        step_name=self.spec.step_name) from None
            raise

    async def _launch(self) -> None:
        spec = self.spec
        self._state = "starting"
        self._tail.clear()
        args = [
            # -P: the model folder (our cwd) must not shadow the modules the worker imports.
            sys.executable, "-P", "-m", WORKER_MODULE,
            "--model-dir", str(spec.model_dir), "--name", spec.step_name,
            "--cpu-affinity", ",".join(map(str, self._cpu_ids)),
            "--env-names", ",".join(sorted(spec.env)),
        ]
        cwd = str(spec.model_dir) if Path(spec.model_dir).is_dir() else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=build_env(spec, self._gpu_ids, self._threads), cwd=cwd, start_new_session=True,
            )
        except OSError as exc:
            self._fail(f"model {spec.step_name!r}: could not start its sidekick process: {exc}")
            raise SidekickLoadError(self._last_error or "", step_name=spec.step_name) from exc
        self._proc = proc
        self._stderr_task = asyncio.create_task(self._pump_stderr(proc), name=f"sidekick-stderr-{spec.step_name}")
        if spec.memory_bytes:  # loading counts too: a model that cannot load within its limit is OOMKilled
            self._guard_task = asyncio.create_task(self._guard_memory(proc, spec.memory_bytes),
                                                   name=f"sidekick-memory-{spec.step_name}")
        log.info("sidekick %s: started pid %d (cpus %s, gpus %r)", spec.step_name, proc.pid,
                 self._cpu_ids, ",".join(self._gpu_ids))
        assert proc.stdout is not None
        try:
            ftype, payload = await asyncio.wait_for(_read_frame(proc.stdout), spec.load_timeout_s)
        except TimeoutError:
            await self._kill(proc)
            message = (f"model {spec.step_name!r} did not finish loading within {spec.load_timeout_s:g}s "
                       f"(python load timeout){self._tail_text()}")
            self._fail(message)
            raise SidekickLoadError(message, step_name=spec.step_name) from None
        except asyncio.CancelledError:
            await self._kill(proc)
            self._state = "stopped"
            raise
        except (asyncio.IncompleteReadError, protocol.ProtocolError):
            rc = await self._reap(proc)
            message = (f"sidekick of model {spec.step_name!r} exited with {describe_exit(rc)} before it was ready"
                       f"{self._oom_note(proc)}{self._tail_text()}")
            self._fail(message)
            raise SidekickLoadError(message, step_name=spec.step_name) from None
        if ftype != protocol.READY:
            info = protocol.parse_json_payload(payload)
            if ftype == protocol.LOAD_ERROR:
                message = self._redact(info.get("message") or f"model {spec.step_name!r} failed to load")
            else:
                message = f"sidekick of model {spec.step_name!r} sent {ftype!r} instead of READY"
            await self._reap(proc)
            self._fail(message)
            raise SidekickLoadError(message, step_name=spec.step_name)
        self._state = "ready"
        self._watch_task = asyncio.create_task(self._watch(proc), name=f"sidekick-watch-{spec.step_name}")
        with contextlib.suppress(ValueError):
            log.info("sidekick %s: pid %d ready (%s)", spec.step_name, proc.pid, json.loads(payload).get("inference"))

    def _fail(self, message: str) -> None:
        self._state = "failed"
        self._last_error = message
        log.warning("sidekick %s: %s", self.spec.step_name, message)

    async def stop(self) -> None:
        """Stop the worker and everything it spawned; the sidekick can be started again."""
        self._stopping = True
        tasks = [t for t in (self._restart_task, self._launching, self._sender) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        proc = self._proc
        if proc is not None:
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_write_frame(proc.stdin, protocol.SHUTDOWN), 0.5)
                    proc.stdin.close()
                await _wait_exit(proc, _STOP_GRACE_S)
            await self._kill(proc)
        for task in (self._watch_task, self._guard_task, self._stderr_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._proc = None
        self._state = "stopped"
        stopped = SidekickError(f"sidekick of step {self.spec.step_name!r} was stopped during a request",
                                step_name=self.spec.step_name)
        while self._waiting:
            self._waiting.popleft().fail(stopped)

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        """SIGKILL the worker's process group (it and anything it spawned) and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await _wait_exit(proc, _REAP_TIMEOUT_S)
        if self._stderr_task is not None and not self._stderr_task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)

    async def _reap(self, proc: asyncio.subprocess.Process) -> int | None:
        """Wait briefly for a dying worker to exit (killing it if it lingers); its exit status."""
        await _wait_exit(proc, 2.0)
        await self._kill(proc)
        return proc.returncode

    # -- monitoring ---------------------------------------------------------------------
    async def _pump_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        buf = b""
        while True:
            chunk = await proc.stderr.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._emit(line, proc.pid)
            if len(buf) > 1 << 16:
                self._emit(buf, proc.pid)
                buf = b""
        if buf:
            self._emit(buf, proc.pid)

    def _emit(self, raw: bytes, pid: int) -> None:
        text = self._redact(raw.decode("utf-8", "replace").rstrip())
        if not text:
            return
        self._tail.append(text)
        first = text.split(" ", 1)[0]
        level = _LEVELS.get(first, logging.INFO)
        self._stderr_log.log(level, "%s", text, extra={"sidekick_step": self.spec.step_name, "sidekick_pid": pid})

    def _tail_text(self, lines: int = 5) -> str:
        if not self._tail:
            return ""
        return "; last output: " + " | ".join(list(self._tail)[-lines:])

    async def _guard_memory(self, proc: asyncio.subprocess.Process, limit: int) -> None:
        def killed(rss: int) -> None:
            self._oom = (proc, f"OOMKilled: its resident memory reached {memory.format_bytes(rss)}, over its "
                               f"memory limit of {self.spec.memory}; raise the step's sidekick memory")
            log.warning("sidekick %s: pid %d %s", self.spec.step_name, proc.pid, self._oom[1])

        await memory.guard(proc.pid, limit, killed, alive=lambda: proc.returncode is None)

    def _oom_note(self, proc: asyncio.subprocess.Process) -> str:
        """``; OOMKilled: ...`` when the memory guard killed this worker, else nothing."""
        return f"; {self._oom[1]}" if self._oom is not None and self._oom[0] is proc else ""

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Notice a worker that dies while idle and restart it before the next request."""
        while proc.returncode is None:
            await asyncio.sleep(_WATCH_INTERVAL_S)
        rc = proc.returncode
        if proc is not self._proc or self._stopping or self._handled is proc or self._busy:
            return
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        if proc is not self._proc or self._stopping or self._handled is proc or self._busy:
            return
        message = (f"sidekick of step {self.spec.step_name!r} (pid {proc.pid}) exited unexpectedly with "
                   f"{describe_exit(rc)} while idle{self._oom_note(proc)}{self._tail_text()}; restarting it")
        self._last_error = message
        log.warning("%s", message)
        await self._kill(proc)
        self._after_exit(proc)

    def _after_exit(self, proc: asyncio.subprocess.Process) -> None:
        """Schedule one restart per dead worker."""
        if self._handled is proc:
            return
        self._handled = proc
        if self._stopping:
            self._state = "stopped"
            return
        self._state = "starting"
        if self._restart_task is None or self._restart_task.done():
            self._restart_task = asyncio.create_task(self._restart_loop(), name=f"sidekick-restart-{self.spec.step_name}")

    async def _restart_loop(self) -> None:
        delay = 0.0
        while not self._stopping:
            if delay:
                self._state = "failed"
                await asyncio.sleep(delay)
                if self._stopping:
                    return
            self._restarts += 1
            log.info("sidekick %s: restarting (restart #%d)", self.spec.step_name, self._restarts)
            try:
                await self._attempt()
                return
            except SidekickLoadError:
                delay = min(max(delay * 2, 1.0), _MAX_BACKOFF_S)

    # -- requests -----------------------------------------------------------------------
    async def _await_ready(self) -> asyncio.subprocess.Process:
        """The live worker, waiting out a (re)start in progress; raise if there is none."""
        name = self.spec.step_name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spec.load_timeout_s + 5
        while self._state == "starting" and loop.time() < deadline:
            launching = self._launching
            if launching is not None and not launching.done():
                # asyncio.wait neither raises the launch's error nor cancels it on timeout.
                await asyncio.wait({launching}, timeout=max(0.0, deadline - loop.time()))
            else:
                await asyncio.sleep(0.01)  # a restart is scheduled but has not begun yet
        proc = self._proc
        if self._state == "ready" and proc is not None and proc.returncode is None:
            return proc
        if self._state == "stopped":
            raise SidekickError(f"sidekick of step {name!r} is not running (not started, or stopped)", step_name=name)
        raise SidekickLoadError(self._last_error or f"sidekick of step {name!r} is not ready", step_name=name)

    async def predict(self, table: pa.Table) -> pa.Table:
        """Answer one batch; while the worker is busy it waits, to be merged with others (see above)."""
        waiting = _Waiting(table, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_waiting(), name=f"sidekick-{self.spec.step_name}-sender")
        # A caller that gives up (cancelled) leaves the batch in flight: its answer is dropped
        # when it comes, and the worker is not disturbed.
        return await waiting.future

    async def _send_waiting(self) -> None:
        """Drain the queue: merge what waits into batches, send each, hand back the slices."""
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                batch = self._take_batch()
                if batch:
                    await self._send(batch)
        except asyncio.CancelledError:  # stop(): nobody may be left waiting
            stopped = SidekickError(f"sidekick of step {self.spec.step_name!r} was stopped during a request",
                                    step_name=self.spec.step_name)
            for waiting in batch:
                waiting.fail(stopped)
            raise

    async def _send(self, batch: list[_Waiting]) -> None:
        if len(batch) == 1:
            await self._answer(batch[0])
            return
        merged = pa.concat_tables([w.table for w in batch])
        try:
            out: pa.Table | None = await self._exchange(merged)
        except SidekickPredictError:
            out = None  # which request was at fault? ask them one by one
        except SidekickCrashedError:
            await self._answer_after_crash(batch)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. stopped: nothing to retry
            for waiting in batch:
                waiting.fail(exc)
            return
        if out is None or out.num_rows != merged.num_rows:
            for waiting in batch:
                await self._answer(waiting)
            return
        offset = 0
        for waiting in batch:
            waiting.succeed(out.slice(offset, waiting.table.num_rows))
            offset += waiting.table.num_rows

    def _take_batch(self) -> list[_Waiting]:
        """The oldest live request plus those behind it with its schema, up to ``max_batch_rows`` rows."""
        batch: list[_Waiting] = []
        rows = 0
        kept: list[_Waiting] = []
        while self._waiting:
            waiting = self._waiting.popleft()
            if waiting.future.done():
                continue  # its caller gave up
            if not batch:
                batch.append(waiting)
                rows = waiting.table.num_rows
            elif rows + waiting.table.num_rows > self.spec.max_batch_rows:
                kept.append(waiting)
                break  # full: the rest keep their order for the next batch
            elif waiting.table.schema.equals(batch[0].table.schema):
                batch.append(waiting)
                rows += waiting.table.num_rows
            else:
                kept.append(waiting)
        self._waiting.extendleft(reversed(kept))
        return batch

    async def _answer(self, waiting: _Waiting) -> None:
        if waiting.future.done():
            return
        try:
            waiting.succeed(await self._exchange(waiting.table))
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            waiting.fail(exc)

    async def _answer_after_crash(self, batch: list[_Waiting]) -> None:
        """A merged batch crashed the worker: each request alone (once it is back), until a
        second one crashes it alone; the rest then fail with that crash, unsent."""
        crashes = 0
        for waiting in batch:
            if waiting.future.done():
                continue
            if crashes >= 2:
                waiting.fail(SidekickCrashedError(
                    f"{self._last_error} (not retried: {crashes} requests crashed it alone)",
                    step_name=self.spec.step_name))
                continue
            try:
                waiting.succeed(await self._exchange(waiting.table))
            except SidekickCrashedError as exc:
                crashes += 1
                waiting.fail(exc)
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                waiting.fail(exc)

    async def _exchange(self, table: pa.Table) -> pa.Table:
        """One request frame to the worker and its answer (the only place that talks to it)."""
        name = self.spec.step_name
        payload = memoryview(protocol.table_to_ipc(table))
        async with self._lock:
            proc = await self._await_ready()
            assert proc.stdin is not None and proc.stdout is not None
            self._busy = True
            self._busy_since = time.monotonic()
            try:
                await _write_frame(proc.stdin, protocol.REQUEST, payload)
                ftype, body = await _read_frame(proc.stdout)
            except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError, protocol.ProtocolError) as exc:
                rc = await self._reap(proc)
                if self._stopping:
                    raise SidekickError(f"sidekick of step {name!r} was stopped during a request",
                                        step_name=name) from None
                hint = self._oom_note(proc) or (" (killed: possibly out of memory)" if rc == -signal.SIGKILL else "")
                detail = f"; {exc}" if isinstance(exc, protocol.ProtocolError) else ""
                message = (f"sidekick of step {name!r} (pid {proc.pid}) died while handling a request: "
                           f"{describe_exit(rc)}{hint}{detail}{self._tail_text(3)}; it is being restarted")
                self._last_error = message
                log.warning("%s", message)
                self._after_exit(proc)
                raise SidekickCrashedError(message, step_name=name) from None
            except asyncio.CancelledError:
                # Only stop() cancels the sender. The answer may still come and would be read as
                # the next request's: restart clean.
                if not self._stopping:
                    self._last_error = f"sidekick of step {name!r} restarted: a request was cancelled mid-flight"
                    await self._kill(proc)
                    self._after_exit(proc)
                raise
            finally:
                self._busy_total += time.monotonic() - self._busy_since
                self._busy = False
        if ftype == protocol.RESPONSE:
            return protocol.ipc_to_table(body)
        if ftype == protocol.ERROR:
            info = protocol.parse_json_payload(body)
            message = self._redact(info.get("message") or "unknown error")
            raise SidekickPredictError(message, step_name=name, error_type=info.get("type"))
        raise SidekickError(f"sidekick of step {name!r} answered with an unexpected frame {ftype!r}",
                            step_name=name)


class _Waiting:
    """A request waiting for its sidekick: its batch and the future its caller awaits."""

    __slots__ = ("future", "table")

    def __init__(self, table: pa.Table, future: asyncio.Future[pa.Table]) -> None:
        self.table = table
        self.future = future

    def succeed(self, out: pa.Table) -> None:
        if not self.future.done():
            self.future.set_result(out)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


# -- replicas --------------------------------------------------------------------------
def _within_gpus(spec: SidekickSpec, policy: ScalePolicy) -> ScalePolicy | None:
    """A GPU step grows only onto GPUs of its own: a second copy of a model on a device that
    already holds one would run it out of memory. Explicit ``gpu_ids`` pin every worker to
    the same devices, so such a step does not grow at all; None when nothing is left to move."""
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


class SidekickPool:
    """The workers of one step; each request goes to the least busy ready one. With a
    `ScalePolicy` the pool grows and shrinks between its bounds as its workers' utilization
    asks (see :mod:`.autoscale`); otherwise it keeps ``replicas`` workers."""

    def __init__(self, spec: SidekickSpec, replicas: int, policy: ScalePolicy | None = None) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1; got {replicas}")
        if policy is not None:
            policy = _within_gpus(spec, policy)
        if policy is not None:  # a fixed replica_count outside the autoscale bounds starts at the nearest bound
            replicas = min(max(replicas, policy.minimum), policy.maximum)
        self.spec = spec
        self.policy = policy
        self._sidekicks = [Sidekick(spec) for _ in range(replicas)]
        self._inflight: dict[Sidekick, int] = dict.fromkeys(self._sidekicks, 0)
        self._next = 0
        self._scaler: asyncio.Task[None] | None = None

    @property
    def sidekicks(self) -> list[Sidekick]:
        return list(self._sidekicks)

    @property
    def replicas(self) -> int:
        return len(self._sidekicks)

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self._sidekicks)

    async def start(self) -> None:
        """Start every replica; if any fails to load, stop them all and raise its error."""
        results = await asyncio.gather(*(s.start() for s in self._sidekicks), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]
        if self.policy is not None:
            self._scaler = asyncio.create_task(self._autoscale(self.policy), name=f"autoscale-{self.spec.step_name}")

    def _choose(self) -> Sidekick:
        n = len(self._sidekicks)
        order = [self._sidekicks[(self._next + i) % n] for i in range(n)]
        for wanted in ("ready", "starting"):
            candidates = [sk for sk in order if sk.state == wanted]
            if candidates:
                best = min(candidates, key=lambda sk: self._inflight[sk])  # ties: round-robin order
                self._next = (self._sidekicks.index(best) + 1) % n
                return best
        self._next = (self._next + 1) % n
        return order[0]

    async def predict(self, table: pa.Table) -> pa.Table:
        sidekick = self._choose()
        self._inflight[sidekick] += 1
        try:
            return await sidekick.predict(table)
        finally:
            if sidekick in self._inflight:  # not when _shrink gave up waiting and stopped it
                self._inflight[sidekick] -= 1

    async def _autoscale(self, policy: ScalePolicy) -> None:
        scaler = Autoscaler(policy)
        while True:  # each sample starts after the last change, so it measures the pool as it is now
            seen = {sk: sk.busy_seconds for sk in self._sidekicks}
            since = time.monotonic()
            await asyncio.sleep(policy.interval_s)
            live = [sk for sk in self._sidekicks if sk.state == "ready"]
            busy = sum(sk.busy_seconds - seen.get(sk, sk.busy_seconds) for sk in live)
            utilization = min(1.0, busy / ((time.monotonic() - since) * len(live))) if live else 0.0
            change = scaler.decide(len(self._sidekicks), utilization)
            if change:
                log.info("step %s: %d -> %d workers (utilization %.0f%%, target %.0f%%)", self.spec.step_name,
                         len(self._sidekicks), len(self._sidekicks) + change, utilization * 100, policy.target * 100)
                await (self._grow() if change > 0 else self._shrink())

    async def _grow(self) -> None:
        sidekick = Sidekick(self.spec)
        self._sidekicks.append(sidekick)  # listed while it starts, so that stop() stops it too
        self._inflight[sidekick] = 0
        try:
            await sidekick.start()
        except Exception as exc:  # noqa: BLE001 - the pool keeps serving with the workers it has
            log.warning("step %s: an added worker failed to start: %s", self.spec.step_name, exc)
            self._sidekicks.remove(sidekick)
            del self._inflight[sidekick]
            await sidekick.stop()

    async def _shrink(self) -> None:
        """The newest worker leaves: no new requests go to it, and it stops once it has answered
        the ones it has (never more than a minute of waiting)."""
        sidekick = self._sidekicks.pop()
        deadline = time.monotonic() + 60
        try:
            while (self._inflight[sidekick] or sidekick.busy or sidekick.waiting) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:  # also when stop() cancels this: the worker is off the list, so stop() would miss it
            await asyncio.shield(sidekick.stop())
            del self._inflight[sidekick]

    async def stop(self) -> None:
        if self._scaler is not None:
            self._scaler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scaler
        await asyncio.gather(*(s.stop() for s in self._sidekicks), return_exceptions=True)


__all__ = [
    "Sidekick",
    "SidekickCrashedError",
    "SidekickError",
    "SidekickLoadError",
    "SidekickPool",
    "SidekickPredictError",
    "SidekickSpec",
    "ScalePolicy",
    "build_env",
]
