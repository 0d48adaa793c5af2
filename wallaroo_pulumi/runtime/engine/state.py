"""What the engine knows of a deployment: the version serving (`Live`, held by each call it takes)
and the deployment's state as its status reports it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.engine import stages as stage_kinds
from wallaroo_pulumi.runtime.engine.step import Step


@dataclass
class Live:
    pipeline_version: str
    pipeline_version_id: int
    steps: list[Step]  # every model, each its own sidekick pool
    stages: list[stage_kinds.AnyStage] = field(default_factory=list)  # what a call runs, in order

    in_flight: int = 0  # calls that took this version and have not answered yet
    _idle: asyncio.Event | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def hold(self):  # noqa: ANN201 - a context manager
        """A call on this version: its sidekicks stay up until it answers (see `drained`)."""
        self.in_flight += 1
        try:
            yield self
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no call holds this version (False when `timeout_s` passed first)."""
        if self.in_flight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


@dataclass
class DeploymentState:
    id: int
    pipeline_id: int
    pipeline_name: str
    config: DeploymentConfig
    pipeline_version: str
    state: str = "starting"
    reason: str | None = None
    live: Live | None = None
    starting: list[Step] = field(default_factory=list)
    failed_sidekicks: list[dict[str, Any]] = field(default_factory=list)
    failed_models: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def deploy_name(self) -> str:
        return f"{self.pipeline_name}-{self.id}"


class DeployError(WallarooError):
    """A deployment that could not come up; its message is the deployment's reason."""
