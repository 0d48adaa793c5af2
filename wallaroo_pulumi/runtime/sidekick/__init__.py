"""Sidekicks: each BYOP model step runs in worker processes of its own (``worker``), supervised
by a `Sidekick`, placed by a `Placement`, and pooled per step by a `SidekickPool`."""

from wallaroo_pulumi.runtime.sidekick.errors import (
    SidekickCrashedError,
    SidekickError,
    SidekickLoadError,
    SidekickPredictError,
)
from wallaroo_pulumi.runtime.sidekick.placement import LocalPlacement, Placement
from wallaroo_pulumi.runtime.sidekick.pool import SidekickPool
from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec
from wallaroo_pulumi.runtime.sidekick.supervisor import Sidekick

__all__ = [
    "LocalPlacement",
    "Placement",
    "Sidekick",
    "SidekickCrashedError",
    "SidekickError",
    "SidekickLoadError",
    "SidekickPool",
    "SidekickPredictError",
    "SidekickSpec",
]
