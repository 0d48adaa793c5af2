"""`SandboxedPlacement`, the runtime's default: `LocalPlacement`'s workers, each run confined by
the runtime's `Sandbox` (its model folder, its requirements and its scratch directory, nothing of
the data directory or of any other process), with a scratch HOME and TMPDIR of its own."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from wallaroo_pulumi.runtime.sandbox.sandbox import Box, Sandbox, SandboxRefused, gpu_devices
from wallaroo_pulumi.runtime.sidekick.errors import SidekickLoadError
from wallaroo_pulumi.runtime.sidekick.placement import Launch, LocalPlacement, Reservation
from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec


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
        try:
            box = await asyncio.to_thread(self.sandbox.open)
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
        argv, env, cwd = box.command(
            base.argv, env, cwd=base.cwd or "/", read=[spec.model_dir, *spec.extra_pythonpath],
            devices=gpu_devices() if reservation.gpu_ids else (),
        )
        return Launch(argv, env, cwd)
