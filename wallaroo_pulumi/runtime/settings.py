"""Runtime settings: one data directory plus limits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from wallaroo_pulumi.runtime.kube.settings import KubePlacementSettings

GiB = 2**30
MiB = 2**20

#: Environment variable holding the admin token to use instead of minting one (Kubernetes Secret).
ADMIN_TOKEN_ENV = "WALLAROO_ADMIN_TOKEN"
#: Environment variable holding the metadata database URL (it may hold a password: never logged).
DATABASE_URL_ENV = "WALLAROO_DATABASE_URL"
#: Environment variable that, set to 1/true/yes, allows GPU steps to run on CPU where there are too few GPUs.
GPU_FALLBACK_ENV = "WALLAROO_ALLOW_GPU_FALLBACK"
ROLES = ("all", "serve", "scheduler")
Role = Literal["all", "serve", "scheduler"]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `3600s` -> seconds; anything else is a ValueError saying what is expected."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"expected a positive duration like 30d, 12h, 90m or 3600s; got {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class PublishSettings(BaseModel):
    """Where `pipelines/publish` pushes images, and what edges are told to call back."""

    registry: str = Field(description="HOST[:PORT]/PREFIX: images go to HOST as PREFIX/pipelines/<pipeline>:<version>-<id>")
    base_image: str = Field(description="the runtime image in a registry, e.g. HOST/PREFIX/runtime:1.0: each "
                                        "publish is its layers plus one holding the pipeline version")
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="from $WALLAROO_OCI_PASSWORD")
    insecure: bool = Field(default=False, description="speak plain HTTP to the registries (a loopback one)")
    centre_url: str | None = Field(default=None, description="the address edges reach this runtime at "
                                   "(OPSCENTER_HOST in their bundle); default: the address it serves on")


class EdgeSettings(BaseModel):
    """`runtime edge`: one published pipeline served offline, its logs shipped to the centre."""

    bundle: SecretStr = Field(description="$EDGE_BUNDLE, as add_edge returned it (it holds the join token)")
    publish_dir: Path = Field(description="the published pipeline in the image ($WALLAROO_PUBLISH_DIR)")
    storage_bytes: int = Field(default=GiB, gt=0, description="$LOCAL_INFERENCE_STORAGE: the inference log rows kept "
                               "while the centre cannot be reached; past it the oldest are dropped (and counted)")
    ship_interval_s: float = Field(default=10.0, gt=0, description="how often logs are shipped (and the bound kept)")


class RuntimeSettings(BaseModel):
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    max_upload_bytes: int = Field(default=10 * GiB, gt=0, description="largest model artifact accepted")
    max_request_bytes: int = Field(
        default=256 * MiB, gt=0, description="largest inference / JSON request body accepted"
    )
    redeploy_on_start: bool = True
    log_retention_s: float | None = Field(
        default=None, gt=0,
        description="delete inference and score logs older than this (whole sealed segments); None keeps them",
    )
    listeners: bool = Field(default=True, description="serve listener tasks (/v1/api/task/*) and their scheduler")
    listener_lease_s: float = Field(
        default=30.0, gt=0,
        description="a listener run whose process sends no heartbeat for this long is failed by the "
        "scheduler and its unscored rows go to the next run (a serving replica killed mid-run)",
    )
    log_level: str = "info"
    role: Role = Field(
        default="all",
        description="all: API + inference + the listener scheduler (one process on the data dir); "
        "serve: API + inference + run-once listener tasks, never fires cron ticks; "
        "scheduler: the only process firing cron ticks (also answers the API, does not redeploy pipelines)",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description=f"use this admin token (e.g. from ${ADMIN_TOKEN_ENV}) instead of minting one; "
        "replicas sharing a data dir then agree on it",
    )

    insecure_sidekicks: bool = Field(
        default=False,
        description="start sidekicks even where the kernel lacks a mechanism the sandbox needs (confined as far as "
        "it can be); without it such a runtime refuses to start them",
    )
    allow_gpu_fallback: bool = Field(
        default=False,
        description="run a step asking for more GPUs than this machine has on CPU (and the GPUs there are); "
        "without it (the default) its deploy fails with the Kubernetes scheduler's reason, 'Insufficient "
        f"nvidia.com/gpu'. Also ${GPU_FALLBACK_ENV}=1",
    )
    sidekick_uids: tuple[int, int] = Field(
        default=(2_000_000_000, 2_000_065_535),
        description="as root, each sidekick worker and each requirements install runs under a uid of its own from "
        "this range (inclusive), shared with every runtime on the host",
    )

    task_python: str | None = Field(
        default=None,
        description="the Python that runs orchestration tasks; it should have the wallaroo SDK installed (tasks "
        "call wallaroo.Client()). None: $WALLAROO_TASK_PYTHON, else the runtime's own Python",
    )

    kubernetes: KubePlacementSettings | None = Field(
        default=None, description="place model steps as pods of their own on this cluster (D35); None: local processes")

    secrets_key: SecretStr | None = Field(
        default=None,
        description="key sealing sidekick credentials in runtime.db (from $WALLAROO_SECRETS_KEY); "
        "None keeps one in DATA_DIR/secrets.key",
    )

    database_url: SecretStr | None = Field(
        default=None,
        description=f"PostgreSQL URL of the metadata store (--database or ${DATABASE_URL_ENV}), shared by replicas on "
        "many hosts; None keeps SQLite in DATA_DIR/runtime.db",
    )
    object_store_url: str | None = Field(
        default=None,
        description="s3://bucket/prefix (endpoint, region and credentials from the environment: "
        "AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) for artifacts and "
        "inference logs; None keeps them in DATA_DIR",
    )

    publish: PublishSettings | None = Field(default=None, description="None: pipelines/publish says how to enable it")
    edge: EdgeSettings | None = Field(default=None, description="run as an edge box (`runtime edge`)")

    @model_validator(mode="after")
    def _check(self) -> RuntimeSettings:
        if self.database_url is not None:
            scheme = self.database_url.get_secret_value().split("://", 1)[0]
            if scheme not in ("postgresql", "postgres"):
                raise ValueError(f"database: expected a postgresql://user@host:port/dbname URL, got a {scheme!r} URL")
            if self.secrets_key is None:
                raise ValueError("database: replicas sharing a database must unseal each other's credentials; "
                                 "give the sealing key in $WALLAROO_SECRETS_KEY")
        if self.object_store_url is not None and not self.object_store_url.startswith("s3://"):
            raise ValueError(f"object_store: expected s3://bucket[/prefix], got {self.object_store_url!r}")
        low, high = self.sidekick_uids
        if not 1 <= low <= high <= 4_294_967_294:
            raise ValueError(f"sidekick_uids: expected START-END with 1 <= START <= END < 4294967295, got {low}-{high}")
        if self.role == "scheduler" and not self.listeners:
            raise ValueError("role: 'scheduler' runs the listener scheduler, so listeners must be enabled")
        if self.admin_token is not None:
            from wallaroo_pulumi.runtime.core.auth import check_admin_token

            check_admin_token(self.admin_token.get_secret_value())
        return self

    @property
    def fires_ticks(self) -> bool:
        """Whether this process runs the listener cron scheduler."""
        return self.listeners and self.role in ("all", "scheduler")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
