"""`KubernetesRuntime`'s inputs as one validated model: each field's type, then the checks across
fields, all before the component registers anything; a bad input names its field."""

from __future__ import annotations

from typing import Any

import pydantic

from wallaroo_pulumi.deployment import parse_memory_quantity
from wallaroo_pulumi.runtime.settings import parse_duration

ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
PLACEMENTS = ("pods", "local")
#: What a runtime reads to reach its bucket (object_store_env), kept in the Secret.
OBJECT_STORE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                    "AWS_ENDPOINT_URL_S3", "AWS_REGION")


def _check_scale_out(database_url: Any, object_store_url: str | None, object_store_env: dict[str, Any] | None,
                     secrets_key: Any) -> None:
    """A runtime scaled out over nodes has a database and a bucket; refuses half of it."""
    if (database_url is None) != (object_store_url is None):
        raise ValueError("KubernetesRuntime: database_url and object_store_url go together: pods on many nodes keep "
                         "metadata in PostgreSQL and artifacts and logs in a bucket; give both, or neither (one node)")
    if object_store_url is not None and not object_store_url.startswith("s3://"):
        raise ValueError(f"KubernetesRuntime: object_store_url: expected s3://bucket[/prefix], got {object_store_url!r}")
    if database_url is not None and secrets_key is None:
        raise ValueError("KubernetesRuntime: secrets_key: required with database_url (pods on other nodes open the "
                         "credentials one pod sealed)")
    unknown = sorted(set(object_store_env or {}) - set(OBJECT_STORE_ENV))
    if unknown:
        raise ValueError(f"KubernetesRuntime: object_store_env: unknown variable(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(OBJECT_STORE_ENV)}")


def _check_publish(args: KubernetesRuntimeArgs) -> None:
    """Publishing needs a registry, a base image in one, and an address edges reach (D49)."""
    given = {"publish_registry": args.publish_registry, "publish_base_image": args.publish_base_image}
    if args.publish_registry is None and args.publish_base_image is None:
        extra = [f for f in ("publish_username", "publish_password") if getattr(args, f) is not None]
        if extra or args.publish_insecure:
            raise ValueError(f"KubernetesRuntime: {', '.join(extra) or 'publish_insecure'}: only with publish_registry "
                             "and publish_base_image (the runtime publishes nowhere without them)")
        return
    missing = [f for f, v in given.items() if v is None]
    if missing:
        raise ValueError(f"KubernetesRuntime: {missing[0]}: required with {' and '.join(set(given) - set(missing))} "
                         "(images go to the registry, built on the runtime image pushed there once)")
    if args.public_url is None:
        raise ValueError("KubernetesRuntime: public_url: required with publish_registry: the address edges join and "
                         "ship their logs to (an Ingress or LoadBalancer in front of the runtime's Service), e.g. "
                         "https://wallaroo.example.com; the in-cluster Service URL is unreachable from an edge")
    if not args.public_url.startswith(("http://", "https://")):
        raise ValueError(f"KubernetesRuntime: public_url: expected an http:// or https:// URL, got {args.public_url!r}")
    if (args.publish_username is None) != (args.publish_password is None):
        raise ValueError("KubernetesRuntime: publish_username and publish_password go together (the registry login)")


class KubernetesRuntimeArgs(pydantic.BaseModel):
    """The component's inputs (see `KubernetesRuntime`); `pulumi.Input` values are typed `Any`."""

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)

    image: Any
    admin_token: Any
    namespace: str = "wallaroo"
    create_namespace: bool = True
    replicas: int = 1
    autoscale_min: int | None = None
    autoscale_max: int | None = None
    autoscale_cpu_utilization: int = 75
    cpus: int | float = 2
    memory: str = "4Gi"
    gpus: int = 0
    node_selector: dict[str, str] | None = None
    storage_size: str = "20Gi"
    storage_class: str | None = None
    access_mode: str | None = None
    service_type: str = "ClusterIP"
    log_retention: str | None = None
    secrets_key: Any = None
    sidekick_placement: str = "pods"
    sidekick_image: Any = None
    database_url: Any = None
    object_store_url: str | None = None
    object_store_env: dict[str, Any] | None = None
    backing_services: bool = False
    publish_registry: str | None = None
    publish_base_image: str | None = None
    publish_username: Any = None
    publish_password: Any = None
    publish_insecure: bool = False
    public_url: str | None = None

    @pydantic.model_validator(mode="after")
    def _check(self) -> KubernetesRuntimeArgs:
        parse_memory_quantity(self.memory)  # its message names the quantity
        if self.log_retention is not None:
            try:
                parse_duration(self.log_retention)
            except ValueError as exc:
                raise ValueError(f"KubernetesRuntime: log_retention: {exc}") from None
        if self.sidekick_placement not in PLACEMENTS:
            raise ValueError(f"KubernetesRuntime: sidekick_placement must be 'pods' (each model step in pods of its "
                             f"own) or 'local' (processes in the runtime's pods); got {self.sidekick_placement!r}")
        if self.backing_services and (self.database_url is not None or self.object_store_url is not None
                                      or self.secrets_key is None):
            raise ValueError("KubernetesRuntime: backing_services declares a PostgreSQL and a MinIO for the runtime: "
                             "give it secrets_key (their passwords derive from it) and no database_url/object_store_url")
        if not self.backing_services:
            _check_scale_out(self.database_url, self.object_store_url, self.object_store_env, self.secrets_key)
        _check_publish(self)
        self.access_mode = self.access_mode or "ReadWriteOnce"
        if self.access_mode not in ACCESS_MODES:
            raise ValueError(f"KubernetesRuntime: access_mode must be one of {', '.join(ACCESS_MODES)}; "
                             f"got {self.access_mode!r}")
        if self.several and self.access_mode == "ReadWriteOncePod" and not self.scale_out:
            raise ValueError("KubernetesRuntime: access_mode 'ReadWriteOncePod' lets one pod mount the data "
                             "volume, but several replicas (and their scheduler pod) share it: use "
                             "'ReadWriteOnce' (all pods run on one node) or a single replica")
        return self

    @classmethod
    def parse(cls, **inputs: Any) -> KubernetesRuntimeArgs:
        """The checked inputs; a bad one raises ValueError naming its field."""
        try:
            return cls(**inputs)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, ValueError):
                raise ValueError(str(cause)) from None
            field = ".".join(str(part) for part in error["loc"])
            raise ValueError(f"KubernetesRuntime: {field}: {error['msg']}") from None

    @property
    def scale_out(self) -> bool:
        """Over many nodes: PostgreSQL + a bucket (given, or declared by backing_services)."""
        return self.backing_services or self.database_url is not None

    @property
    def several(self) -> bool:
        """More than one serving pod (then a scheduler pod of its own)."""
        return (self.autoscale_max or self.replicas) > 1

    @property
    def publishes(self) -> bool:
        """Pipelines are published to a registry (WallarooPublish) and edges join at public_url."""
        return self.publish_registry is not None

    @property
    def pods(self) -> bool:
        """Model steps placed as pods of their own."""
        return self.sidekick_placement == "pods"
