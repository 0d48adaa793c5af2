"""Where a whole model step runs. The engine asks a `StepPlacement` for each step's pool:
`LocalSteps` makes a `SidekickPool` of worker processes placed by a `Placement`; the Kubernetes
placement (`runtime/kube`) makes a pool of pods. `StepTarget` is what the engine knows of the
step beyond its worker spec: which deployment, pipeline version and model it belongs to, and
where it may run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick.autoscale import ScalePolicy
from wallaroo_pulumi.runtime.sidekick.placement import Placement
from wallaroo_pulumi.runtime.sidekick.pool import SidekickPool
from wallaroo_pulumi.runtime.sidekick.protocol import StreamPart
from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec


@dataclass(frozen=True)
class StepTarget:
    deployment_id: int
    pipeline_name: str
    pipeline_version: str
    pipeline_version_id: int
    model_name: str
    model_version: str
    sha: str
    requirements: list[str] = field(default_factory=list)
    arch: str = "x86"
    accel: str = "none"
    deployment_label: str | None = None
    autoscale_min: int | None = None
    autoscale_max: int | None = None
    autoscale_target_pct: float | None = None


class StepPool(Protocol):
    spec: SidekickSpec

    @property
    def sidekicks(self) -> list: ...  # each with state, pid, restarts, last_error

    @property
    def replicas(self) -> int: ...

    @property
    def restarts(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def predict(self, table: pa.Table) -> pa.Table: ...

    def predict_stream(self, table: pa.Table) -> AsyncIterator[StreamPart]: ...


class StepPlacement(Protocol):
    #: True when steps run on this host (their model folder and requirements are needed here).
    local: bool

    def pool(self, target: StepTarget, spec: SidekickSpec, replicas: int, policy: ScalePolicy | None) -> StepPool: ...


class LocalSteps:
    """Each step a `SidekickPool` of local worker processes placed by ``placement``."""

    local = True

    def __init__(self, placement: Placement) -> None:
        self.placement = placement

    def pool(self, target: StepTarget, spec: SidekickSpec, replicas: int, policy: ScalePolicy | None) -> SidekickPool:
        return SidekickPool(spec, replicas, policy, self.placement)
