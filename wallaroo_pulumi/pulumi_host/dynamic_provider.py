"""The `pulumi-resource-pulumi-python` plugin: Pulumi's dynamic-provider host, extended to import our resources (D6)."""

from __future__ import annotations

import ast
import base64
import importlib.util
import os
import sys
import types
from typing import Any

import dill

PROVIDER_KEY = "__provider"

# dynamic resource type (after "pulumi-python:dynamic/") -> "module:ProviderClass"
PROVIDERS = {
    "wallaroo:ApiKey": "wallaroo_pulumi.resources.api_key:ApiKeyProvider",
    "wallaroo:Model": "wallaroo_pulumi.resources.model:ModelProvider",
    "wallaroo:Pipeline": "wallaroo_pulumi.resources.pipeline:PipelineProvider",
    "wallaroo:ListenerSchedule": "wallaroo_pulumi.resources.listener_schedule:ScheduleProvider",
    "wallaroo:Publish": "wallaroo_pulumi.resources.publish:PublishProvider",
    "wallaroo:Edge": "wallaroo_pulumi.resources.edge:EdgeProvider",
    "wallaroo:Orchestration": "wallaroo_pulumi.resources.orchestration:OrchestrationProvider",
    "wallaroo:Task": "wallaroo_pulumi.resources.task:TaskProvider",
}


def _pulumi_dynamic_host() -> types.ModuleType:
    """`pulumi.dynamic.__main__` without its module-level `main()` call, so we can extend it."""
    spec = importlib.util.find_spec("pulumi.dynamic.__main__")
    assert spec and spec.origin
    tree = ast.parse(open(spec.origin, encoding="utf-8").read(), spec.origin)
    tree.body = [node for node in tree.body if not (
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "id", None) == "main")]
    module = types.ModuleType("pulumi.dynamic._host")
    module.__file__ = spec.origin
    module.__package__ = "pulumi.dynamic"
    exec(compile(tree, spec.origin, "exec"), module.__dict__)  # noqa: S102 - Pulumi's own source
    return module


def provider_for(urn: str) -> str | None:
    """The pickled provider for a resource type of ours, base64 as Pulumi stores it."""
    type_token = urn.split("::")[-2] if "::" in urn else ""
    target = PROVIDERS.get(type_token.removeprefix("pulumi-python:dynamic/"))
    if target is None:
        return None
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return base64.b64encode(dill.dumps(cls(), recurse=True)).decode()


def import_properties(urn: str, inputs: dict[str, Any], config: dict[str, Any]) -> dict[str, Any] | None:
    """Properties for Reading a resource being imported: provider and connection.

    `config` is the stack config as `Configure` received it (namespaced keys, secrets decrypted).
    """
    provider = inputs.get(PROVIDER_KEY) or provider_for(urn)
    if provider is None:
        return None
    url = (inputs.get("url") or config.get("wallaroo:url") or os.environ.get("WALLAROO_URL")
           or "http://127.0.0.1:8787")
    token = inputs.get("token") or config.get("wallaroo:token") or os.environ.get("WALLAROO_TOKEN") or ""
    from wallaroo_pulumi.resources._base import secret

    return {**inputs, PROVIDER_KEY: provider, "url": url, "token": secret(token)}


class _Context:
    """A gRPC context whose `abort` shows a client error as its message alone, not Pulumi's traceback (D6)."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def abort(self, code: Any, details: str) -> None:
        from wallaroo_pulumi.client import WallarooError

        error = sys.exc_info()[1]
        if isinstance(error, WallarooError):
            details = f"{type(error).__name__}: {error}"
        self._context.abort(code, details)


def main() -> None:
    host = _pulumi_dynamic_host()
    rpc = host.rpc

    class Servicer(host.DynamicResourceProviderServicer):
        def Create(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method names
            return super().Create(request, _Context(context))

        def Update(self, request: Any, context: Any) -> Any:  # noqa: N802
            return super().Update(request, _Context(context))

        def Delete(self, request: Any, context: Any) -> Any:  # noqa: N802
            return super().Delete(request, _Context(context))

        def Read(self, request: Any, context: Any) -> Any:  # noqa: N802
            context = _Context(context)
            props = rpc.deserialize_properties(request.properties)
            if PROVIDER_KEY not in props:
                inputs = rpc.deserialize_properties(request.inputs) if request.HasField("inputs") else {}
                filled = import_properties(request.urn, inputs, self._config)
                if filled is not None:
                    request.properties.CopyFrom(host.asyncio.new_event_loop().run_until_complete(
                        rpc.serialize_properties(filled, {})))
            return super().Read(request, context)

    host.DynamicResourceProviderServicer = Servicer
    host.main()


if __name__ == "__main__":
    sys.exit(main())
