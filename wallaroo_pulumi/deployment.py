"""Deployment configuration: engine resources, replicas and per-model sidekicks (D15)."""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P)?$")
_FACTORS = {
    None: 1,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}

Arch = Literal["x86", "arm"]
Accel = Literal["none", "cuda", "jetson", "openvino", "qaic"]


def parse_memory_quantity(value: str) -> int:
    """Bytes in a Kubernetes memory quantity such as ``512Mi``, ``2Gi`` or ``1e9``-free ``1000M`` (D15)."""
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(
            f"{value!r} is not a Kubernetes memory quantity; expected a number with an "
            "optional suffix Ki, Mi, Gi, Ti (powers of 2) or K, M, G, T (powers of 10), e.g. '512Mi' or '2Gi'"
        )
    number, suffix = match.groups()
    return int(float(number) * _FACTORS[suffix])


def copy_tree(value: Any) -> Any:
    """A copy of nested dicts and lists; the leaves (maybe Pulumi Outputs) are shared, not copied."""
    if isinstance(value, dict):
        return {k: copy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_tree(v) for v in value]
    return value


def check_env_names(env: dict[str, str]) -> dict[str, str]:
    """`env` unchanged, or ValueError naming the first key that is not an environment variable name."""
    for name in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"env name {name!r} is not a valid environment variable name")
    return env


#: Protective defaults for what Wallaroo's config does not bound (ours alone, issue 28).
DEFAULT_SCRATCH = "1Gi"
DEFAULT_MAX_PROCESSES = 512


def _check_memory(value: str | None) -> str | None:
    if value is not None:
        if parse_memory_quantity(value) < 16 * 2**20:
            raise ValueError(f"{value!r} is below the 16Mi minimum a Python process needs")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SidekickConfig(_Strict):
    """Resources and environment of one model step's own process; `env` is the only way credentials reach it."""

    cpus: float = Field(default=1.0, gt=0, description="CPU cores (request = limit)")
    memory: str | None = Field(default=None, description="Kubernetes quantity, e.g. '1Gi'")
    gpus: int = Field(default=0, ge=0)
    env: dict[str, str] = Field(default_factory=dict)
    max_batch_rows: int = Field(
        default=64, ge=1,
        description="requests that wait for a busy sidekick are merged into one batch of up to this many "
                    "rows (an LLM adapter then sends them concurrently); 1 sends every request alone",
    )
    arch: Arch | None = None
    accel: Accel | None = None
    scratch_size: str = Field(
        default=DEFAULT_SCRATCH,
        description="ours alone (Wallaroo has no such field): the most its scratch folder (HOME, TMPDIR) may hold, "
                    "a Kubernetes quantity; a write past it fails with 'No space left on device'. Locally as root a "
                    "tmpfs (memory) of this size; in a pod an emptyDir of this sizeLimit and the ephemeral-storage "
                    "request and limit",
    )
    max_processes: int = Field(
        default=DEFAULT_MAX_PROCESSES, ge=8,
        description="ours alone (Wallaroo has no such field): processes and threads the model may run at once "
                    "(a cgroup pids limit as root, RLIMIT_NPROC without); a fork past it fails with EAGAIN",
    )

    model_concurrency: int | None = Field(
        default=None, ge=1, le=256,
        description="batches the model's worker answers at once, on as many threads (D61; named after the SDK's "
                    "engine-wide model_server.model_concurrency): default the model's own predict_concurrency "
                    "(the bundled LLM adapters declare MAX_CONCURRENCY), else 1; set it only for thread-safe code",
    )

    _memory = field_validator("memory")(classmethod(lambda cls, v: _check_memory(v)))

    @field_validator("scratch_size")
    @classmethod
    def _scratch(cls, value: str) -> str:
        if parse_memory_quantity(value) < 2**20:
            raise ValueError(f"{value!r} is below the 1Mi minimum scratch size")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env_names(env)


class DeploymentConfig(_Strict):
    """What `pipelines/deploy` applies: the engine, its replicas and each sidekick."""

    cpus: float = Field(default=1.0, gt=0)
    memory: str = "1Gi"
    gpus: int = Field(default=0, ge=0)
    replica_count: int | None = Field(default=None, ge=1)
    autoscale_min: int | None = Field(default=None, ge=0)
    autoscale_max: int | None = Field(default=None, ge=1)
    autoscale_cpu_utilization: float | None = Field(default=None, gt=0, le=100)
    scale_up_queue_depth: int | None = Field(
        default=None, ge=1, description="queue-depth autoscaling (instead of busy time): a step grows while its "
        "requests queued or in flight per worker, averaged over autoscaling_window, reach this")
    scale_down_queue_depth: int | None = Field(
        default=None, ge=1, description="with scale_up_queue_depth: a step shrinks while that average is below this "
        "(default 1)")
    autoscaling_window: int | None = Field(
        default=None, ge=1, description="with scale_up_queue_depth: the seconds the queue depth is averaged over "
        "(default 300)")
    deployment_label: str | None = None
    arch: Arch = "x86"
    accel: Accel = "none"
    lb_cpus: float | None = Field(default=None, gt=0)
    lb_memory: str | None = None
    python_load_timeout_secs: float = Field(default=120.0, gt=0)
    sidekicks: dict[str, SidekickConfig] = Field(
        default_factory=dict, description="keyed by model name, or '<name>-<model version id>' for one version"
    )

    _memory = field_validator("memory", "lb_memory")(classmethod(lambda cls, v: _check_memory(v)))

    @model_validator(mode="after")
    def _replicas(self) -> Self:
        if self.autoscale_max is not None:
            low = self.autoscale_min or 0
            if low > self.autoscale_max:
                raise ValueError(
                    f"autoscale_min ({low}) must not exceed autoscale_max ({self.autoscale_max})"
                )
            if self.replica_count is not None and self.replica_count > self.autoscale_max:
                raise ValueError(
                    f"replica_count ({self.replica_count}) must not exceed autoscale_max ({self.autoscale_max})"
                )
        elif self.autoscale_min is not None:
            raise ValueError("autoscale_min needs autoscale_max (use replica_autoscale_min_max)")
        if self.scale_up_queue_depth is None:
            for name in ("scale_down_queue_depth", "autoscaling_window"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} ({getattr(self, name)}) needs scale_up_queue_depth (queue-depth autoscaling)")
        else:
            if self.autoscale_max is None:
                raise ValueError(f"scale_up_queue_depth ({self.scale_up_queue_depth}) needs autoscale_max "
                                 "(use replica_autoscale_min_max)")
            if self.scale_down_queue_depth is not None and self.scale_down_queue_depth > self.scale_up_queue_depth:
                raise ValueError(f"scale_down_queue_depth ({self.scale_down_queue_depth}) must not exceed "
                                 f"scale_up_queue_depth ({self.scale_up_queue_depth})")
        return self

    @property
    def replicas(self) -> int:
        """Processes to start per step now: fixed count, else the autoscale floor (at least 1)."""
        if self.replica_count is not None:
            return self.replica_count
        return max(1, self.autoscale_min or 0)

    def sidekick(self, model_name: str, version_id: int | None = None) -> SidekickConfig:
        """A step's sidekick settings: its own version's ('<name>-<model version id>'), else its model's."""
        own = self.sidekicks.get(f"{model_name}-{version_id}") if version_id is not None else None
        return own or self.sidekicks.get(model_name, SidekickConfig())

    def redacted(self) -> dict[str, Any]:
        """The config as JSON with sidekick env values hidden: safe for responses and logs."""
        data = self.model_dump(mode="json")
        for side in data["sidekicks"].values():
            side["env"] = {name: "[secret]" for name in side["env"]}
        return data


class DeploymentConfigBuilder:
    """The Wallaroo SDK's `DeploymentConfigBuilder`: same methods, and `build()` returns the same
    nested `engine_config` (engine, enginelb, engineAux.images, D33).

    Sidekick methods take the model first, as the SDK does: an SDK `ModelVersion` (its `uid()`),
    our client's `ModelVersion` ('<name>-<id>'), a `WallarooModel` or a str (a model name: every
    version of it in the pipeline). A `WallarooModel` stays the key in `build()`'s images: its
    `WallarooPipeline` keys it by its name, or by '<name>-<model version id>' where the steps hold
    another version of that model, so two versions each get their own (D47). Values may be Pulumi Outputs.
    """

    def __init__(self, workspace_id: int | None = None) -> None:
        self._config: dict[str, Any] = {"engine": {}, "enginelb": {}, "engineAux": {"images": {}}}
        if workspace_id is not None:
            self._config["workspace_id"] = workspace_id

    @property
    def _engine(self) -> dict[str, Any]:
        return self._config["engine"]

    @staticmethod
    def _resource(stanza: dict[str, Any], name: str, value: Any) -> None:
        resources = stanza.setdefault("resources", {"limits": {}, "requests": {}})
        resources["limits"][name] = value
        resources["requests"][name] = value

    def cpus(self, n: float) -> Self:
        self._engine["cpu"] = n
        self._resource(self._engine, "cpu", n)
        return self

    def memory(self, quantity: str) -> Self:
        self._resource(self._engine, "memory", quantity)
        return self

    def gpus(self, n: int) -> Self:
        self._engine["gpu"] = n
        self._resource(self._engine, "nvidia.com/gpu", n)
        return self

    def deployment_label(self, label: str) -> Self:
        self._engine["node_selector"] = label
        return self

    def arch(self, arch: Arch) -> Self:
        self._engine["arch"] = str(arch)
        return self

    def accel(self, accel: Accel) -> Self:
        self._engine["accel"] = str(accel)
        return self

    def lb_cpus(self, n: float) -> Self:
        self._resource(self._config["enginelb"], "cpu", n)
        return self

    def lb_memory(self, quantity: str) -> Self:
        self._resource(self._config["enginelb"], "memory", quantity)
        return self

    def python_load_timeout_secs(self, secs: float) -> Self:
        self._engine.setdefault("python", {})["load_timeout_millis"] = int(secs * 1000)
        return self

    def replica_count(self, n: int) -> Self:
        maximum = self._engine.get("autoscale", {}).get("replica_max")
        if isinstance(maximum, int) and isinstance(n, int) and n > maximum:
            raise ValueError(f"replica_count ({n}) must not exceed the autoscale maximum ({maximum}); "
                             "use replica_autoscale_min_max to change it")
        self._engine["replicas"] = n
        return self

    def replica_autoscale_min_max(self, maximum: int, minimum: int = 0) -> Self:
        if minimum > maximum:
            raise ValueError(f"replica_autoscale_min_max: minimum ({minimum}) must not exceed maximum ({maximum})")
        replicas = self._engine.get("replicas")
        if isinstance(replicas, int) and replicas > maximum:
            raise ValueError(f"replica_autoscale_min_max: maximum ({maximum}) must be at least replica_count ({replicas})")
        self._engine.setdefault("autoscale", {}).update(replica_min=minimum, replica_max=maximum, type="cpu")
        return self

    def autoscale_cpu_utilization(self, pct: float) -> Self:
        self._engine.setdefault("autoscale", {})["cpu_utilization"] = pct
        return self

    def scale_up_queue_depth(self, queue_depth: int) -> Self:
        """Queue-depth autoscaling, as the SDK's builder: grow at this many requests per worker (queued or in flight)."""
        autoscale = self._engine.setdefault("autoscale", {})
        autoscale.update(scale_up_queue_depth=queue_depth, type="queue")
        autoscale.setdefault("scale_down_queue_depth", 1)
        return self

    def scale_down_queue_depth(self, queue_depth: int | None = None) -> Self:
        self._queue_autoscale("scale_down_queue_depth")["scale_down_queue_depth"] = queue_depth or 1
        return self

    def autoscaling_window(self, window_seconds: int | None = None) -> Self:
        self._queue_autoscale("autoscaling_window")["autoscaling_window"] = window_seconds or 300
        return self

    def _queue_autoscale(self, feature: str) -> dict[str, Any]:
        autoscale = self._engine.get("autoscale") or {}
        if "scale_up_queue_depth" not in autoscale:
            raise ValueError(f"{feature}: call scale_up_queue_depth first (it turns queue-depth autoscaling on)")
        return autoscale

    def disable_autoscale(self) -> Self:
        self._engine.pop("autoscale", None)
        return self

    def _side(self, model: Any) -> dict[str, Any]:
        if callable(getattr(model, "uid", None)):  # the SDK's ModelVersion
            key = model.uid()
        elif isinstance(getattr(model, "id", None), int) and isinstance(getattr(model, "name", None), str):
            key = f"{model.name}-{model.id}"  # our client's ModelVersion
        elif isinstance(model, str) or isinstance(getattr(model, "model_name", None), str):
            key = model  # a WallarooModel stays the key: the pipeline maps it to its version (D47)
        else:
            raise TypeError("sidekick settings need a model: a WallarooModel, a ModelVersion or a model name (str)")
        return self._config["engineAux"]["images"].setdefault(key, {})

    def sidekick_cpus(self, model: Any, n: float) -> Self:
        self._resource(self._side(model), "cpu", n)
        return self

    def sidekick_memory(self, model: Any, quantity: str) -> Self:
        self._resource(self._side(model), "memory", quantity)
        return self

    def sidekick_gpus(self, model: Any, n: int) -> Self:
        self._resource(self._side(model), "nvidia.com/gpu", n)
        return self

    def sidekick_env(self, model: Any, env: dict[str, Any]) -> Self:
        self._side(model)["env"] = [{"name": name, "value": value} for name, value in env.items()]
        return self

    def sidekick_max_batch_rows(self, model: Any, rows: int) -> Self:
        """Ours alone: requests waiting for a busy sidekick are merged into batches of up to `rows` rows."""
        self._side(model)["max_batch_rows"] = rows
        return self

    def sidekick_model_concurrency(self, model: Any, n: int) -> Self:
        """Ours, per model: batches its worker answers at once (thread-safe models only; D61)."""
        self._side(model)["model_concurrency"] = n
        return self

    def sidekick_scratch_size(self, model: Any, quantity: str) -> Self:
        """Ours alone: the most the model's scratch folder may hold (default 1Gi), e.g. '256Mi'."""
        self._side(model)["scratch_size"] = quantity
        return self

    def sidekick_max_processes(self, model: Any, n: int) -> Self:
        """Ours alone: processes and threads the model may run at once (default 512)."""
        self._side(model)["max_processes"] = n
        return self

    def sidekick_arch(self, model: Any, arch: Arch) -> Self:
        self._side(model)["arch"] = str(arch)
        return self

    def sidekick_accel(self, model: Any, accel: Accel) -> Self:
        self._side(model)["accel"] = str(accel)
        return self

    def build(self) -> dict[str, Any]:
        """The nested engine_config (values may be Pulumi Outputs/secrets): for
        `WallarooPipeline(deployment=...)`, `WallarooClient.deploy` or a raw `pipelines/deploy`."""
        config = copy_tree(self._config)
        label = config["engine"].get("node_selector")
        if label is not None:
            for image in config["engineAux"]["images"].values():
                image.setdefault("node_selector", label)
        return config
