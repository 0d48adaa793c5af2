"""wallaroo-pulumi: managed LLM inference endpoints as infrastructure code.

Public API: the Pulumi resources, the deployment-config builder, the runtime
client and the local-runtime component.
"""

from pathlib import Path as _Path

# A wheel installs the repo's top-level components/ as wallaroo_pulumi/components
# (see pyproject's package-dir). An editable install of a checkout cannot map a
# sibling folder into this package, so there we let `wallaroo_pulumi.components`
# resolve to ../components directly.
_checkout_components = _Path(__file__).resolve().parent.parent / "components"
if (_checkout_components / "__init__.py").exists() and not (_Path(__file__).parent / "components").exists():
    __path__.append(str(_checkout_components.parent))  # type: ignore[name-defined]  # noqa: F821

# Lazy exports: the runtime and its sidekick processes import this package too,
# and must not pay for importing Pulumi.
_EXPORTS = {
    "WallarooModel": "wallaroo_pulumi.resources.model",
    "WallarooPipeline": "wallaroo_pulumi.resources.pipeline",
    "LLMListenerSchedule": "wallaroo_pulumi.resources.listener_schedule",
    "Connection": "wallaroo_pulumi.resources.connection",
    "DeploymentConfig": "wallaroo_pulumi.deployment",
    "DeploymentConfigBuilder": "wallaroo_pulumi.deployment",
    "SidekickConfig": "wallaroo_pulumi.deployment",
    "WallarooClient": "wallaroo_pulumi.client",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wallaroo_pulumi' has no attribute {name!r}")
