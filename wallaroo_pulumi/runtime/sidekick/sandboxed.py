"""`SandboxedPlacement`, the runtime's default: `LocalPlacement`'s workers, each run confined by
the runtime's `Sandbox` (its model folder, its requirements and its scratch directory, nothing of
the data directory or of any other process), with a scratch HOME and TMPDIR of its own, and its
`Bounds` (CPU quota and set, memory, processes, scratch size) held by the kernel where it can."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from wallaroo_pulumi.runtime.sandbox.sandbox import Bounds, Box, Sandbox, SandboxRefused, gpu_devices
from wallaroo_pulumi.runtime.sidekick.errors import SidekickLoadError
from wallaroo_pulumi.runtime.sidekick.placement import Launch, LocalPlacement, Reservation
from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec

log = logging.getLogger("wallaroo.sidekick")


@dataclass(frozen=True)
class BoxedReservation(Reservation):
    """A worker's CPUs and GPUs, plus its box: scratch directory and (as root) uid, kept across restarts."""

    box: Box | None = field(default=None, compare=False, repr=False)


class SandboxedPlacement(LocalPlacement):
    def __init__(self, sandbox: Sandbox, *, allow_gpu_fallback: bool = False) -> None:
        super().__init__(allow_gpu_fallback=allow_gpu_fallback)
        self.sandbox = sandbox

    async def reserve(self, spec: SidekickSpec) -> Reservation:
        base = await super().reserve(spec)
        bounds = Bounds(cpus=spec.cpus, cpu_ids=base.cpu_ids, memory_bytes=spec.memory_bytes,
                        max_processes=spec.max_processes, scratch_bytes=spec.scratch_bytes)
        unenforced = self.sandbox.unenforced(bounds)
        if unenforced:
            log.warning("step %r: this host cannot hold %s by the kernel (see /health sidekick_sandbox.limits)",
                        spec.step_name, ", ".join(unenforced))
        try:
            box = await asyncio.to_thread(self.sandbox.open, bounds, spec.step_name.replace("/", "_").replace("#", "_"))
        except SandboxRefused as exc:
            raise SidekickLoadError(f"model {spec.step_name!r} was not started: {exc}", step_name=spec.step_name) from None
        return BoxedReservation(cpu_ids=base.cpu_ids, gpu_ids=base.gpu_ids, box=box)

    async def release(self, reservation: Reservation) -> None:
        if isinstance(reservation, BoxedReservation) and reservation.box is not None:
            await asyncio.to_thread(reservation.box.close)

    def launch(self, spec: SidekickSpec, reservation: Reservation) -> Launch:
        assert isinstance(reservation, BoxedReservation) and reservation.box is not None  # reserve() made it
        box = reservation.box
        base = super().launch(spec, reservation)
        env = dict(base.env)
        for var in ("HOME", "TMPDIR"):
            if var not in spec.env:
                env[var] = str(box.scratch)
        box.stopped()  # whatever an earlier start of this worker left in its cgroups goes first
        argv, env, cwd = box.command(
            base.argv, env, cwd=base.cwd or "/", read=[spec.model_dir, *spec.extra_pythonpath],
            devices=gpu_devices() if reservation.gpu_ids else (),
        )
        assert box.bounds is not None
        limits: dict[str, object] = {"enforced": self.sandbox.limits_report()["enforced"]}
        unenforced = self.sandbox.unenforced(box.bounds)
        if unenforced:
            limits["not_enforced"] = unenforced
        return Launch(argv, env, cwd, kernel=box.cgroup, limits=limits)
