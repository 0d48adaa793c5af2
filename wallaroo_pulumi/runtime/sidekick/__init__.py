"""Sidekicks: each BYOP model step runs in worker processes of its own (``worker``), supervised
by a `Sidekick`, placed by a `Placement`, and pooled per step by a `SidekickPool`.

The names in `__all__` load on first use (typed imports below for IDEs and type checkers): every
worker imports this package before it pins its CPUs, and must not start numpy's or pyarrow's
threads before that (docs/decisions.md, D19)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.sidekick.errors import (
        SidekickCrashedError,
        SidekickError,
        SidekickLoadError,
        SidekickPredictError,
    )
    from wallaroo_pulumi.runtime.sidekick.placement import LocalPlacement, Placement
    from wallaroo_pulumi.runtime.sidekick.pool import SidekickPool
    from wallaroo_pulumi.runtime.sidekick.sandboxed import SandboxedPlacement
    from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec
    from wallaroo_pulumi.runtime.sidekick.supervisor import Sidekick

_SOURCES = {
    "LocalPlacement": "wallaroo_pulumi.runtime.sidekick.placement",
    "Placement": "wallaroo_pulumi.runtime.sidekick.placement",
    "SandboxedPlacement": "wallaroo_pulumi.runtime.sidekick.sandboxed",
    "Sidekick": "wallaroo_pulumi.runtime.sidekick.supervisor",
    "SidekickCrashedError": "wallaroo_pulumi.runtime.sidekick.errors",
    "SidekickError": "wallaroo_pulumi.runtime.sidekick.errors",
    "SidekickLoadError": "wallaroo_pulumi.runtime.sidekick.errors",
    "SidekickPool": "wallaroo_pulumi.runtime.sidekick.pool",
    "SidekickPredictError": "wallaroo_pulumi.runtime.sidekick.errors",
    "SidekickSpec": "wallaroo_pulumi.runtime.sidekick.spec",
}
__all__ = [
    "LocalPlacement", "Placement", "SandboxedPlacement", "Sidekick", "SidekickCrashedError", "SidekickError", "SidekickLoadError",
    "SidekickPool", "SidekickPredictError", "SidekickSpec",
]


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'wallaroo_pulumi.runtime.sidekick' has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
