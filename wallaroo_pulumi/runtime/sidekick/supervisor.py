"""`Sidekick`: the supervisor of one worker process of one model step. It spawns the worker
where its `Placement` says, waits for READY, sends it batches (as many at once as it answers, D61)
over its `Channel`, restarts it with
backoff after a crash, kills it past its memory limit (OOMKilled: the kernel does, where the
placement gives it a memory cgroup, else a resident-memory watcher), and stops it with everything
it spawned. Nothing it logs or raises carries a value of the model's env (see :mod:`.redact`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick import protocol
from wallaroo_pulumi.runtime.sidekick.autoscale import BusyClock
from wallaroo_pulumi.runtime.sidekick.channel import Channel
from wallaroo_pulumi.runtime.sidekick.errors import (
    SidekickCrashedError,
    SidekickError,
    SidekickLoadError,
    SidekickPredictError,
    stopped_error,
)
from wallaroo_pulumi.runtime.sidekick.exits import describe_exit, wait_exit
from wallaroo_pulumi.runtime.sidekick.merging import MergingQueue
from wallaroo_pulumi.runtime.sidekick.oom import OomWatch
from wallaroo_pulumi.runtime.sidekick.output import WorkerOutput
from wallaroo_pulumi.runtime.sidekick.placement import Placement, Reservation
from wallaroo_pulumi.runtime.sidekick.redact import EnvRedactor
from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec
from wallaroo_pulumi.runtime.sidekick.streaming import Streaming

log = logging.getLogger("wallaroo.sidekick")

_STOP_GRACE_S = 2.0
_REAP_TIMEOUT_S = 5.0
_MAX_BACKOFF_S = 30.0
_WATCH_INTERVAL_S = 0.1


class Sidekick(Streaming):
    """One worker process for one model step (one replica)."""

    def __init__(self, spec: SidekickSpec, placement: Placement) -> None:
        self.spec = spec
        self._placement = placement
        self._reservation: Reservation | None = None
        self._redact = EnvRedactor.for_env(spec.env)
        self._output = WorkerOutput(spec.step_name, self._redact)
        self._memory = OomWatch(spec.step_name, spec.memory)
        self._proc: asyncio.subprocess.Process | None = None
        self._state = "stopped"
        self._restarts = 0
        self._last_error: str | None = None
        self._channel: Channel | None = None
        self._launching: asyncio.Future[None] | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._guard_task: asyncio.Task[None] | None = None
        self._limits: dict[str, object] = {}
        self._stderr_task: asyncio.Task[None] | None = None
        self._drains: set[asyncio.Task[None]] = set()
        self._handled: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._clock = BusyClock()  # time spent answering batches, for the pool's autoscaler
        self._queue = MergingQueue(self._exchange, step_name=spec.step_name, max_batch_rows=spec.max_batch_rows,
                                   batching=spec.batching)

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
    def limits(self) -> dict[str, object]:
        """What holds the worker's limits, and what the kernel counted (throttling, OOM kills)."""
        kernel = self._memory.kernel
        if not self._limits and kernel is None:
            return {}
        counted = {}
        if kernel is not None:
            with contextlib.suppress(OSError):
                counted = kernel.stats()
        return {**self._limits, **counted}

    @property
    def busy(self) -> bool:
        return self._clock.busy

    @property
    def busy_seconds(self) -> float:
        """Time spent answering batches so far, the batch in flight included."""
        return self._clock.seconds

    @property
    def waiting(self) -> int:
        """Requests queued behind the batches in flight."""
        return self._queue.waiting

    @property
    def concurrency(self) -> int:
        """Batches the worker answers at once (its READY says; 1 before it is ready)."""
        return self._queue.slots

    @property
    def cpu_ids(self) -> list[int]:
        """The cores reserved for the worker (none before the first start, or after a stop)."""
        return list(self._reservation.cpu_ids) if self._reservation is not None else []

    @property
    def gpu_ids(self) -> list[str]:
        return list(self._reservation.gpu_ids) if self._reservation is not None else []

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
        if self._reservation is None:
            self._reservation = await self._placement.reserve(self.spec)
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
        self._output.clear()
        assert self._reservation is not None  # start() reserved it
        launch = self._placement.launch(spec, self._reservation)
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=launch.env, cwd=launch.cwd, start_new_session=True,
            )
        except OSError as exc:
            self._fail(f"model {spec.step_name!r}: could not start its sidekick process: {exc}")
            raise SidekickLoadError(self._last_error or "", step_name=spec.step_name) from exc
        self._proc = proc
        self._limits = dict(launch.limits)
        self._memory.started(launch.kernel)
        self._stderr_task = asyncio.create_task(self._output.pump(proc), name=f"sidekick-stderr-{spec.step_name}")
        if spec.memory_bytes:  # loading counts too: a model that cannot load within its limit is OOMKilled
            self._guard_task = asyncio.create_task(self._memory.watch(proc, spec.memory_bytes),
                                                   name=f"sidekick-memory-{spec.step_name}")
        log.info("sidekick %s: started pid %d (cpus %s, gpus %r)", spec.step_name, proc.pid,
                 self.cpu_ids, ",".join(self.gpu_ids))
        assert proc.stdout is not None
        try:
            ftype, _, payload = await asyncio.wait_for(protocol.read_frame_async(proc.stdout), spec.load_timeout_s)
        except TimeoutError:
            await self._kill(proc)
            message = (f"model {spec.step_name!r} did not finish loading within {spec.load_timeout_s:g}s "
                       f"(python load timeout){self._output.tail_text()}")
            self._fail(message)
            raise SidekickLoadError(message, step_name=spec.step_name) from None
        except asyncio.CancelledError:
            await self._kill(proc)
            self._state = "stopped"
            raise
        except (asyncio.IncompleteReadError, protocol.ProtocolError):
            rc = await self._reap(proc)
            message = (f"sidekick of model {spec.step_name!r} exited with {describe_exit(rc)} before it was ready"
                       f"{self._oom_note(proc)}{self._output.tail_text()}")
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
        ready = protocol.parse_json_payload(payload)
        self._queue.slots = self._clock.slots = max(1, int(ready.get("concurrency") or 1))
        assert proc.stdin is not None
        self._channel = Channel(proc.stdout, proc.stdin, lambda exc, streamed: self._lost(proc, exc, streamed),
                                spec.step_name)
        self._state = "ready"
        self._watch_task = asyncio.create_task(self._watch(proc), name=f"sidekick-watch-{spec.step_name}")
        log.info("sidekick %s: pid %d ready (%s, %d batch(es) at once)", spec.step_name, proc.pid,
                 ready.get("inference"), self._queue.slots)

    def _fail(self, message: str) -> None:
        self._state = "failed"
        self._last_error = message
        log.warning("sidekick %s: %s", self.spec.step_name, message)

    async def stop(self) -> None:
        """Stop the worker and everything it spawned; the sidekick can be started again."""
        self._stopping = True
        tasks = [t for t in (self._restart_task, self._launching, *self._queue.tasks, *self._drains)
                 if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        proc = self._proc
        if proc is not None:
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(protocol.write_frame_async(proc.stdin, protocol.SHUTDOWN), 0.5)
                    proc.stdin.close()
                await wait_exit(proc, _STOP_GRACE_S)
            await self._kill(proc)
        if self._channel is not None:
            await self._channel.stop(stopped_error(self.spec.step_name))
        for task in (self._watch_task, self._guard_task, self._stderr_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._proc = None
        self._state = "stopped"
        self._queue.fail_waiting(stopped_error(self.spec.step_name))
        if self._reservation is not None:
            await self._placement.release(self._reservation)
            self._reservation = None

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        """SIGKILL the worker's process group (it and anything it spawned) and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await wait_exit(proc, _REAP_TIMEOUT_S)
        if self._stderr_task is not None and not self._stderr_task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)

    async def _reap(self, proc: asyncio.subprocess.Process) -> int | None:
        """Wait briefly for a dying worker to exit (killing it if it lingers); its exit status."""
        await wait_exit(proc, 2.0)
        await self._kill(proc)
        return proc.returncode

    # -- monitoring ---------------------------------------------------------------------
    def _oom_note(self, proc: asyncio.subprocess.Process) -> str:
        """``; OOMKilled: ...`` when the memory guard or the kernel killed this worker, else nothing."""
        return self._memory.note(proc, current=proc is self._proc)

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Notice a worker that dies while idle and restart it before the next request."""
        while proc.returncode is None:
            await asyncio.sleep(_WATCH_INTERVAL_S)
        rc = proc.returncode
        if proc is not self._proc or self._stopping or self._handled is proc or self._clock.busy:
            return
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        if proc is not self._proc or self._stopping or self._handled is proc or self._clock.busy:
            return
        message = (f"sidekick of step {self.spec.step_name!r} (pid {proc.pid}) exited unexpectedly with "
                   f"{describe_exit(rc)} while idle{self._oom_note(proc)}{self._output.tail_text()}; restarting it")
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
    async def _ready_channel(self) -> Channel:
        """The live worker's channel, waiting out a (re)start in progress; raise if there is none."""
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
        proc, channel = self._proc, self._channel
        if self._state == "ready" and proc is not None and proc.returncode is None and channel is not None:
            return channel
        if self._state == "stopped":
            raise SidekickError(f"sidekick of step {name!r} is not running (not started, or stopped)", step_name=name)
        raise SidekickLoadError(self._last_error or f"sidekick of step {name!r} is not ready", step_name=name)

    async def predict(self, table: pa.Table) -> pa.Table:
        """Answer one batch; while the worker is busy it waits, to be merged with others (see :mod:`.merging`)."""
        return await self._queue.submit(table)

    def _halted(self) -> bool:
        return self._stopping

    def _label(self) -> str:
        return f"sidekick {self.spec.step_name}"

    async def _lost(self, proc: asyncio.subprocess.Process, exc: BaseException, streamed: bool) -> BaseException:
        """The worker's frames ended (it died, or wrote garbage): what each request in flight gets.
        The worker is restarted, whether it was answering or idle."""
        name = self.spec.step_name
        busy = self._clock.busy
        rc = await self._reap(proc)
        if self._stopping:
            return stopped_error(name)
        hint = self._oom_note(proc) or (" (killed: possibly out of memory)" if rc == -signal.SIGKILL else "")
        detail = f"; {exc}" if isinstance(exc, protocol.ProtocolError) else ""
        if busy:
            doing = "streaming an answer" if streamed else "handling a request"
            message = (f"sidekick of step {name!r} (pid {proc.pid}) died while {doing}: "
                       f"{describe_exit(rc)}{hint}{detail}{self._output.tail_text(3)}; it is being restarted")
        else:
            message = (f"sidekick of step {name!r} (pid {proc.pid}) exited unexpectedly with {describe_exit(rc)} "
                       f"while idle{self._oom_note(proc)}{detail}{self._output.tail_text()}; restarting it")
        if self._handled is not proc:
            self._last_error = message
            log.warning("%s", message)
        self._after_exit(proc)
        return SidekickCrashedError(message, step_name=name)

    def _answer(self, ftype: bytes, body: bytes) -> pa.Table:
        """The answer frame after a request: its table, or the model's error raised."""
        name = self.spec.step_name
        if ftype == protocol.RESPONSE:
            return protocol.ipc_to_table(body)
        if ftype == protocol.ERROR:
            info = protocol.parse_json_payload(body)
            message = self._redact(info.get("message") or "unknown error")
            raise SidekickPredictError(message, step_name=name, error_type=info.get("type"))
        raise SidekickError(f"sidekick of step {name!r} answered with an unexpected frame {ftype!r}",
                            step_name=name)

    async def _exchange(self, table: pa.Table) -> pa.Table:
        """One request frame to the worker and its answer (the merging queue holds a slot for it)."""
        payload = memoryview(protocol.table_to_ipc(table))
        channel = await self._ready_channel()
        self._clock.start()
        try:
            frame = await channel.request(protocol.REQUEST, payload)
        finally:
            self._clock.stop()
        return self._answer(frame.ftype, frame.payload)
