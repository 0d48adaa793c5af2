"""wallaroo-pulumi: managed LLM inference endpoints as infrastructure code.

The public API is the names in `__all__`. They load on first use, so that the runtime and
its sidekick processes, which import this package too, never pay for importing Pulumi (D19).
"""

from __future__ import annotations

import importlib
from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

# An editable checkout: `wallaroo_pulumi.components` is the repo's top-level components/ (D4).
_checkout_components = _Path(__file__).resolve().parent.parent / "components"
if (_checkout_components / "__init__.py").exists() and not (_Path(__file__).parent / "components").exists():
    __path__.append(str(_checkout_components.parent))

if TYPE_CHECKING:
    from wallaroo_pulumi.adapters.schemas import LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA
    from wallaroo_pulumi.client import WallarooClient
    from wallaroo_pulumi.components import BYOP_DIR
    from wallaroo_pulumi.components.kubernetes_runtime import KubernetesRuntime
    from wallaroo_pulumi.components.local_runtime import LocalRuntime, local_or_configured
    from wallaroo_pulumi.deployment import DeploymentConfig, DeploymentConfigBuilder, SidekickConfig
    from wallaroo_pulumi.resources.api_key import WallarooApiKey
    from wallaroo_pulumi.resources.connection import Connection
    from wallaroo_pulumi.resources.edge import WallarooEdge
    from wallaroo_pulumi.resources.listener_schedule import LLMListenerSchedule
    from wallaroo_pulumi.resources.model import WallarooModel
    from wallaroo_pulumi.resources.orchestration import WallarooOrchestration
    from wallaroo_pulumi.resources.pipeline import WallarooPipeline, curl_command
    from wallaroo_pulumi.resources.publish import WallarooPublish
    from wallaroo_pulumi.resources.steps import Fallback, KeySplit, RandomSplit, Shadow
    from wallaroo_pulumi.resources.task import WallarooTask
    from wallaroo_pulumi.scorers.schemas import listener_schemas

_SOURCES = {
    "BYOP_DIR": "wallaroo_pulumi.components",
    "Connection": "wallaroo_pulumi.resources.connection",
    "DeploymentConfig": "wallaroo_pulumi.deployment",
    "DeploymentConfigBuilder": "wallaroo_pulumi.deployment",
    "Fallback": "wallaroo_pulumi.resources.steps",
    "KeySplit": "wallaroo_pulumi.resources.steps",
    "RandomSplit": "wallaroo_pulumi.resources.steps",
    "Shadow": "wallaroo_pulumi.resources.steps",
    "KubernetesRuntime": "wallaroo_pulumi.components.kubernetes_runtime",
    "LLMListenerSchedule": "wallaroo_pulumi.resources.listener_schedule",
    "LLM_INPUT_SCHEMA": "wallaroo_pulumi.adapters.schemas",
    "LLM_OUTPUT_SCHEMA": "wallaroo_pulumi.adapters.schemas",
    "LocalRuntime": "wallaroo_pulumi.components.local_runtime",
    "SidekickConfig": "wallaroo_pulumi.deployment",
    "WallarooApiKey": "wallaroo_pulumi.resources.api_key",
    "WallarooClient": "wallaroo_pulumi.client",
    "WallarooEdge": "wallaroo_pulumi.resources.edge",
    "WallarooModel": "wallaroo_pulumi.resources.model",
    "WallarooOrchestration": "wallaroo_pulumi.resources.orchestration",
    "WallarooTask": "wallaroo_pulumi.resources.task",
    "WallarooPipeline": "wallaroo_pulumi.resources.pipeline",
    "WallarooPublish": "wallaroo_pulumi.resources.publish",
    "curl_command": "wallaroo_pulumi.resources.pipeline",
    "listener_schemas": "wallaroo_pulumi.scorers.schemas",
    "local_or_configured": "wallaroo_pulumi.components.local_runtime",
}
__all__ = [
    "BYOP_DIR", "Connection", "DeploymentConfig", "DeploymentConfigBuilder", "Fallback", "KeySplit", "KubernetesRuntime",
    "LLMListenerSchedule", "LLM_INPUT_SCHEMA", "LLM_OUTPUT_SCHEMA", "LocalRuntime", "RandomSplit", "Shadow",
    "SidekickConfig", "WallarooApiKey", "WallarooClient", "WallarooEdge", "WallarooModel", "WallarooOrchestration",
    "WallarooPipeline", "WallarooPublish", "WallarooTask", "curl_command", "listener_schemas",
    "local_or_configured",
]


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'wallaroo_pulumi' has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
