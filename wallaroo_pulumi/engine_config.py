"""Wallaroo's nested `engine_config` (what the SDK's `DeploymentConfigBuilder.build()` sends to
`pipelines/deploy`) mapped onto our `DeploymentConfig` and back (D33).

    {"engine": {"cpu", "gpu", "resources": {"requests": {...}, "limits": {...}}, "replicas",
                "autoscale": {"replica_min", "replica_max", "type", "cpu_utilization"},
                "node_selector", "arch", "accel", "python": {"load_timeout_millis"}},
     "enginelb": {"resources": {...}},
     "engineAux": {"images": {"<model>-<model version id>": {"resources": {...},
                   "env": [{"name", "value"}], "arch", "accel", "node_selector", "max_batch_rows",
                   "scratch_size", "max_processes", "model_concurrency"}}},
     "workspace_id": 1}

The mapping only moves values (they may be Pulumi Outputs in a program); `parse` then validates
them with `DeploymentConfig` and names a bad value by its place in this nested form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pydantic import ValidationError

from wallaroo_pulumi.deployment import DeploymentConfig, SidekickConfig, copy_tree

GPU = "nvidia.com/gpu"
OTHER_GPUS = ("gpu.intel.com/i915", "qualcomm.com/qaic", "amd.com/gpu")
_TOP = {"engine", "enginelb", "engineAux", "workspace_id"}
_ENGINE = {"cpu", "gpu", "resources", "replicas", "autoscale", "node_selector", "arch", "accel", "python", "image"}
_QUEUE_AUTOSCALE = ("scale_up_queue_depth", "scale_down_queue_depth", "autoscaling_window")
_AUTOSCALE = {"replica_min", "replica_max", "type", "cpu_utilization", *_QUEUE_AUTOSCALE}
_IMAGE = {"resources", "env", "arch", "accel", "node_selector", "image", "max_batch_rows", "scratch_size", "max_processes",
          "model_concurrency"}
_OURS = {field: SidekickConfig.model_fields[field].default
         for field in ("max_batch_rows", "scratch_size", "max_processes", "model_concurrency")}
_AMOUNTS = {"cpu", "memory", GPU}

# our field -> its place in the nested form ("<key>": the sidekick's image key)
_ENGINE_PLACES = {
    "cpus": "engine.cpu", "memory": "engine.resources.requests.memory", "gpus": "engine.gpu",
    "replica_count": "engine.replicas", "autoscale_min": "engine.autoscale.replica_min",
    "autoscale_max": "engine.autoscale.replica_max", "autoscale_cpu_utilization": "engine.autoscale.cpu_utilization",
    "deployment_label": "engine.node_selector", "arch": "engine.arch", "accel": "engine.accel",
    "lb_cpus": "enginelb.resources.requests.cpu", "lb_memory": "enginelb.resources.requests.memory",
    "python_load_timeout_secs": "engine.python.load_timeout_millis",
    **{field: f"engine.autoscale.{field}" for field in ("scale_up_queue_depth", "scale_down_queue_depth",
                                                       "autoscaling_window")},
}
_SIDEKICK_PLACES = {
    "cpus": "resources.requests.cpu", "memory": "resources.requests.memory", "gpus": f"resources.requests.{GPU}",
    "env": "env", "max_batch_rows": "max_batch_rows", "arch": "arch", "accel": "accel",
    "scratch_size": "scratch_size", "max_processes": "max_processes", "model_concurrency": "model_concurrency",
}


class EngineConfigError(ValueError):
    """A nested engine_config this runtime cannot take; the message starts with the field's path."""


def is_engine_config(value: Any) -> bool:
    """True for Wallaroo's nested form (what the SDK builds), False for our flat `DeploymentConfig` form."""
    return isinstance(value, Mapping) and bool(_TOP & set(value)) and not (set(value) - _TOP)


def image_key(model_name: str, model_version_id: int) -> str:
    """The `engineAux.images` key of a model version, as the SDK's `ModelVersion.uid()` spells it."""
    return f"{model_name}-{model_version_id}"


def key_of_steps(steps: Collection[Mapping[str, Any]]) -> Callable[[str], str]:
    """A `sidekicks` key's images key, given the pipeline's steps ({name, model_version_id}): a model's
    name becomes '<name>-<model version id>' where it has one version there; the bare name of a model
    with several versions (it configures them all) and a '<name>-<id>' key stay as they are."""
    ids: dict[str, set[int]] = {}
    for step in steps:
        if step.get("model_version_id") is not None:
            ids.setdefault(step["name"], set()).add(step["model_version_id"])
    return lambda name: image_key(name, next(iter(ids[name]))) if len(ids.get(name, ())) == 1 else name


def model_resolver(step_names: list[str], versions: Mapping[str, Collection[int]] | None = None) -> Callable[[str], str]:
    """Maps an images key to its `sidekicks` key: the step's model name (the name itself, or
    '<name>-<model version id>'), or, where the pipeline holds several versions of that model
    (`versions`: model name -> its version ids; or the name more than once in `step_names`),
    '<name>-<id>' of one of them: that version only (D47)."""
    names = set(step_names)

    def model_of(key: str) -> str:
        if key in names:
            return key
        for name in sorted(names, key=len, reverse=True):
            if re.fullmatch(re.escape(name) + r"-\d+", key):
                ids = set((versions or {}).get(name, ()))
                several = len(ids) > 1 or step_names.count(name) > 1
                return key if several and int(key[len(name) + 1:]) in ids else name
        raise EngineConfigError(
            f"engineAux.images.{key}: not a model of this pipeline; expected '<model>-<model version id>' "
            f"of one of its steps ({', '.join(sorted(names)) or 'none'})"
        )

    return model_of


def versions_named(wire: Mapping[str, Any], step_names: list[str]) -> dict[str, set[int]]:
    """model name -> the version ids its `engineAux.images` keys name: what `model_resolver` needs to
    read back a config keyed per version (two keys of one model name two of its versions)."""
    model_of = model_resolver(step_names)
    out: dict[str, set[int]] = {}
    for key in ((wire.get("engineAux") or {}).get("images") or {}) if isinstance(wire, Mapping) else ():
        name = model_of(key)
        if key != name:
            out.setdefault(name, set()).add(int(key[len(name) + 1:]))
    return out


def to_flat(wire: Mapping[str, Any], model_of: Callable[[str], str]) -> dict[str, Any]:
    """The nested form as our `DeploymentConfig` fields (sidekicks keyed by `model_of`), values as given."""
    _keys(wire, _TOP, "")
    engine = dict(wire.get("engine") or {})
    _keys(engine, _ENGINE, "engine.")
    if engine.get("image") is not None:
        raise EngineConfigError("engine.image: engine images are not supported by this runtime "
                                "(it runs each model in a Python sidekick); remove it")
    autoscale = dict(engine.get("autoscale") or {})
    _keys(autoscale, _AUTOSCALE, "engine.autoscale.")
    kind = autoscale.get("type", "cpu")
    if kind not in ("cpu", "queue"):
        raise EngineConfigError(f"engine.autoscale.type: expected 'cpu' (busy time) or 'queue' (queue depth), got {kind!r}")
    if kind == "queue" and autoscale.get("scale_up_queue_depth") is None:
        raise EngineConfigError("engine.autoscale.type: 'queue' needs scale_up_queue_depth (the SDK's "
                                "DeploymentConfigBuilder.scale_up_queue_depth sets both)")
    amounts = _amounts(engine.get("resources"), "engine.resources.")
    flat: dict[str, Any] = {}
    _put(flat, "cpus", _same(engine.get("cpu"), amounts.get("cpu"), "engine.cpu"))
    _put(flat, "memory", amounts.get("memory"))
    _put(flat, "gpus", _same(engine.get("gpu"), amounts.get(GPU), "engine.gpu"))
    _put(flat, "replica_count", engine.get("replicas"))
    _put(flat, "autoscale_min", autoscale.get("replica_min"))
    _put(flat, "autoscale_max", autoscale.get("replica_max"))
    _put(flat, "autoscale_cpu_utilization", autoscale.get("cpu_utilization"))
    for field in _QUEUE_AUTOSCALE:
        _put(flat, field, autoscale.get(field))
    _put(flat, "deployment_label", engine.get("node_selector"))
    _put(flat, "arch", engine.get("arch"))
    _put(flat, "accel", engine.get("accel"))
    python = dict(engine.get("python") or {})
    _keys(python, {"load_timeout_millis"}, "engine.python.")
    millis = python.get("load_timeout_millis")
    _put(flat, "python_load_timeout_secs", millis / 1000 if isinstance(millis, int | float) else millis)
    lb = dict(wire.get("enginelb") or {})
    _keys(lb, {"resources"}, "enginelb.")
    lb_amounts = _amounts(lb.get("resources"), "enginelb.resources.")
    _put(flat, "lb_cpus", lb_amounts.get("cpu"))
    _put(flat, "lb_memory", lb_amounts.get("memory"))
    aux = dict(wire.get("engineAux") or {})
    _keys(aux, {"images"}, "engineAux.")
    sidekicks: dict[str, dict[str, Any]] = {}
    for key, image in (aux.get("images") or {}).items():
        where = f"engineAux.images.{key}."
        image = dict(image or {})
        _keys(image, _IMAGE, where)
        if image.get("image") is not None:
            raise EngineConfigError(f"{where}image: sidekick images are not supported by this runtime "
                                    "(a BYOP model runs in a Python sidekick); remove it")
        name = model_of(key)
        if name in sidekicks:
            raise EngineConfigError(f"{where[:-1]}: model {name!r} is configured twice")
        side = _amounts(image.get("resources"), where + "resources.")
        entry: dict[str, Any] = {}
        _put(entry, "cpus", side.get("cpu"))
        _put(entry, "memory", side.get("memory"))
        _put(entry, "gpus", side.get(GPU))
        _put(entry, "env", _env(image.get("env"), where + "env"))
        for field in ("arch", "accel", *_OURS):
            _put(entry, field, image.get(field))
        sidekicks[name] = entry
    flat["sidekicks"] = sidekicks
    return flat


def parse(wire: Mapping[str, Any], step_names: list[str],
          versions: Mapping[str, Collection[int]] | None = None) -> DeploymentConfig:
    """Validate a nested engine_config for a pipeline with these steps (EngineConfigError naming the
    field); `versions` (model name -> its version ids in the pipeline) lets two versions of one
    model each have their own sidekick settings."""
    if not isinstance(wire, Mapping):
        raise EngineConfigError(f": expected a JSON object (engine, enginelb, engineAux), got {type(wire).__name__}")
    keys: dict[str, str] = {}
    model_of = model_resolver(step_names, versions)

    def remember(key: str) -> str:
        name = model_of(key)
        keys[name] = key
        return name

    flat = to_flat(wire, remember)
    try:
        return DeploymentConfig.model_validate(flat)
    except ValidationError as exc:
        raise EngineConfigError(_describe(exc, keys)) from None


def from_config(config: DeploymentConfig | Mapping[str, Any], key_of: Callable[[str], str]) -> dict[str, Any]:
    """Our config as the nested form the SDK's builder produces; `key_of` gives a model's images key."""
    data = config.model_dump(mode="json") if isinstance(config, DeploymentConfig) else copy_tree(dict(config))
    engine: dict[str, Any] = {}
    _put(engine, "cpu", data.get("cpus"))
    _put(engine, "gpu", data.get("gpus"))
    _put(engine, "resources", _resources(data.get("cpus"), data.get("memory"), data.get("gpus")))
    _put(engine, "replicas", data.get("replica_count"))
    autoscale: dict[str, Any] = {}
    _put(autoscale, "replica_min", data.get("autoscale_min"))
    _put(autoscale, "replica_max", data.get("autoscale_max"))
    _put(autoscale, "cpu_utilization", data.get("autoscale_cpu_utilization"))
    for field in _QUEUE_AUTOSCALE:
        _put(autoscale, field, data.get(field))
    if autoscale:
        engine["autoscale"] = {**autoscale, "type": "queue" if data.get("scale_up_queue_depth") else "cpu"}
    _put(engine, "node_selector", data.get("deployment_label"))
    _put(engine, "arch", data.get("arch"))
    _put(engine, "accel", data.get("accel"))
    secs = data.get("python_load_timeout_secs")
    if secs is not None:
        engine["python"] = {"load_timeout_millis": int(round(secs * 1000)) if isinstance(secs, int | float) else secs}
    lb: dict[str, Any] = {}
    _put(lb, "resources", _resources(data.get("lb_cpus"), data.get("lb_memory"), None))
    images: dict[str, Any] = {}
    for name, side in (data.get("sidekicks") or {}).items():
        image: dict[str, Any] = {}
        _put(image, "resources", _resources(side.get("cpus"), side.get("memory"), side.get("gpus")))
        env = side.get("env")
        if env:
            image["env"] = [{"name": k, "value": v} for k, v in env.items()]
        for field in ("arch", "accel"):
            _put(image, field, side.get(field))
        for field, default in _OURS.items():  # ours alone: sent only when set
            if side.get(field) not in (None, default):
                image[field] = side[field]
        if data.get("deployment_label") is not None:
            image["node_selector"] = data["deployment_label"]
        images[key_of(name)] = image
    return {"engine": engine, "enginelb": lb, "engineAux": {"images": images}}


def redacted(wire: Mapping[str, Any]) -> dict[str, Any]:
    """The nested form with every sidekick env value hidden: safe for answers and logs."""
    out = copy_tree(dict(wire))
    for image in ((out.get("engineAux") or {}).get("images") or {}).values():
        if image.get("env"):
            image["env"] = [{"name": e["name"], "value": "[secret]"} for e in image["env"]]
    return out


# -- helpers -------------------------------------------------------------------------------
def _keys(stanza: Any, allowed: set[str], where: str) -> None:
    if not isinstance(stanza, Mapping):
        raise EngineConfigError(f"{where.rstrip('.') or 'engine_config'}: expected a JSON object, got {type(stanza).__name__}")
    unknown = sorted(set(stanza) - allowed)
    if unknown:
        raise EngineConfigError(f"{where}{unknown[0]}: unknown setting (expected one of {', '.join(sorted(allowed))})")


def _amounts(resources: Any, where: str) -> dict[str, Any]:
    """One amount per resource: the request, or the limit; both given must agree."""
    if resources is None:
        return {}
    _keys(resources, {"requests", "limits"}, where)
    requests, limits = dict(resources.get("requests") or {}), dict(resources.get("limits") or {})
    for part, values in (("requests", requests), ("limits", limits)):
        for key in values:
            if key in OTHER_GPUS:
                raise EngineConfigError(f"{where}{part}.{key}: this runtime schedules NVIDIA GPUs only; use {GPU}")
        _keys(values, _AMOUNTS, f"{where}{part}.")
    out = {**limits, **requests}
    for key in set(requests) & set(limits):
        _same(requests[key], limits[key], f"{where}limits.{key}")
    return {k: _cpu(v) if k == "cpu" else v for k, v in out.items()}


def _same(first: Any, second: Any, where: str) -> Any:
    if first is None:
        return second
    if second is not None and _comparable(first) and _comparable(second) and _cpu(first) != _cpu(second):
        raise EngineConfigError(f"{where}: {second!r} differs from {first!r}; this runtime gives a process one "
                                "amount, both its request and its limit")
    return first


def _comparable(value: Any) -> bool:
    return isinstance(value, int | float | str)


def _cpu(value: Any) -> Any:
    """Kubernetes CPU quantities: 1, 0.5, '500m', '2'."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("m") and text[:-1].isdigit():
            return int(text[:-1]) / 1000
        try:
            return float(text)
        except ValueError:
            return value
    return value


def _env(env: Any, where: str) -> Any:
    if env is None or isinstance(env, Mapping):
        return env
    if not isinstance(env, list):
        raise EngineConfigError(f"{where}: expected a list of {{name, value}}, got {type(env).__name__}")
    out: dict[str, Any] = {}
    for i, item in enumerate(env):
        if not isinstance(item, Mapping) or set(item) - {"name", "value"} or "name" not in item:
            raise EngineConfigError(f"{where}[{i}]: expected {{\"name\": ..., \"value\": ...}}")
        out[item["name"]] = item.get("value", "")
    return out


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


def _resources(cpu: Any, memory: Any, gpus: Any) -> dict[str, Any] | None:
    amounts: dict[str, Any] = {}
    _put(amounts, "cpu", cpu)
    _put(amounts, "memory", memory)
    if gpus:
        amounts[GPU] = gpus
    return {"limits": dict(amounts), "requests": dict(amounts)} if amounts else None


def _describe(exc: ValidationError, keys: Mapping[str, str]) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if len(loc) >= 3 and loc[0] == "sidekicks":
            key = keys.get(loc[1], loc[1])
            place = f"engineAux.images.{key}." + _SIDEKICK_PLACES.get(loc[2], loc[2]) + "".join(f".{p}" for p in loc[3:])
        elif loc:
            place = _ENGINE_PLACES.get(loc[0], loc[0]) + "".join(f".{p}" for p in loc[1:])
        else:
            place = ""
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        for ours, theirs in _ENGINE_PLACES.items():
            msg = msg.replace(f"{ours} (", f"{theirs} (")
        parts.append(f"{place}: {msg}" if place else msg)
    return "; ".join(parts)
