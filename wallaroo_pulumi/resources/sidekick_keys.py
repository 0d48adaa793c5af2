"""A `WallarooPipeline`'s sidekick settings keyed as the runtime takes them (D47): a model name
configures every version of that model in the pipeline; a `WallarooModel` resource given as the key
configures that resource's version only ('<name>-<model version id>', known once it is uploaded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi

from .. import engine_config
from ..deployment import DeploymentConfig
from .steps import model_name


def _is_resource(key: Any) -> bool:
    """A `WallarooModel` (or anything with its `model_name`), not a name or a {name, version, sha} ref."""
    return not isinstance(key, str | dict) and isinstance(getattr(key, "model_name", None), str)


def _versions_of(name: str, models: Sequence[Any]) -> int:
    """How many different versions of model `name` the steps hold (a resource once however often it is a step)."""
    seen: set[Any] = set()
    for m in models:
        if model_name(m) == name:
            seen.add(("ref", m.get("version")) if isinstance(m, dict) else ("resource", id(m)))
    return len(seen)


def sidekick_key(model: Any, models: Sequence[Any]) -> str | pulumi.Output[str]:
    """The `sidekicks` key for settings given for `model`: a name as it is; a `WallarooModel` by its
    name, or '<name>-<model version id>' where the steps hold another version of that model."""
    if not _is_resource(model):
        return model
    name = model.model_name
    if not any(m is model for m in models):
        raise ValueError(f"sidekick settings are given for WallarooModel {name!r}, which is not a step of this "
                         "pipeline; add it to the steps or remove its settings")
    if _versions_of(name, models) == 1:
        return name
    return model.model_version_id.apply(lambda version_id: engine_config.image_key(name, version_id))


def keyed(pairs: list[tuple[Any, dict[str, Any]]]) -> dict[str, Any] | pulumi.Output[dict[str, Any]]:
    """The pairs as a dict; an Output of it where a key is only known once a model is uploaded."""
    if all(isinstance(k, str) for k, _ in pairs):
        return dict(pairs)
    keys = pulumi.Output.all(*[k for k, _ in pairs])
    values = pulumi.Output.from_input([v for _, v in pairs])
    return pulumi.Output.all(keys, values).apply(lambda kv: dict(zip(kv[0], kv[1], strict=True)))


def split_deployment(deployment: Any, models: Sequence[Any]) -> tuple[dict[str, Any], Any]:
    """(settings without env, {key: env}): only the env becomes secret. `deployment` is Wallaroo's
    nested engine_config (what `DeploymentConfigBuilder().build()` returns, sidekicks keyed by a
    `WallarooModel`, a model name or '<model>-<model version id>') or our `DeploymentConfig` (or its
    dict); `models` are the pipeline's step models."""
    if isinstance(deployment, DeploymentConfig):
        deployment = deployment.model_dump(exclude_defaults=True)
    elif engine_config.is_engine_config(deployment):
        resolve = engine_config.model_resolver([model_name(m) for m in models])
        deployment = engine_config.to_flat(deployment, lambda key: resolve(key) if isinstance(key, str) else key)
    public = dict(deployment or {})
    sidekicks: list[tuple[Any, dict[str, Any]]] = []
    env: list[tuple[Any, dict[str, Any]]] = []
    for model, cfg in (public.pop("sidekicks", None) or {}).items():
        key = sidekick_key(model, models)
        if isinstance(key, str) and any(k == key for k, _ in sidekicks):
            raise ValueError(f"sidekicks.{key}: configured twice (a WallarooModel and its name are one key while "
                             "the pipeline holds one version of it)")
        cfg = dict(cfg)
        values = cfg.pop("env", None)
        sidekicks.append((key, cfg))
        if values:
            env.append((key, values))
    public["sidekicks"] = keyed(sidekicks)
    return public, keyed(env)


def version_keyed(wire: Any) -> Any:
    """Wallaroo's nested engine_config with each `WallarooModel` images key as '<name>-<model version id>'
    (a publish holds no step models to fold it by: the runtime keys it by the name where that is the
    pipeline's only version of the model)."""
    images = ((wire.get("engineAux") or {}).get("images") or {}) if isinstance(wire, dict) else {}
    if all(isinstance(k, str) for k in images):
        return wire
    pairs = [(k.model_version_id.apply(lambda i, n=k.model_name: engine_config.image_key(n, i)) if _is_resource(k) else k, v)
             for k, v in images.items()]
    return {**wire, "engineAux": {**wire["engineAux"], "images": keyed(pairs)}}
