"""`WallarooPublish`: a pipeline version published as an OCI image to the runtime's registry. A new
version (or engine config) updates it in place the way Wallaroo upgrades edges: a new publish that
`replaces` the old one (every edge moves to it with an upgrade bundle), then the old one's tag goes."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, ReadResult, Resource, ResourceProvider, UpdateResult
from pydantic import BaseModel, ConfigDict, Field

from ..client import NotFoundError
from . import _base
from .connection import Connection, resolve
from .progress import report
from .sidekick_keys import version_keyed


class PublishInputs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    pipeline_version_pk_id: int = Field(ge=1)
    engine_config: dict[str, Any] | None = None
    timeout_s: float = Field(default=600, gt=0)
    url: str


COMPARED = ("pipeline_version_pk_id", "engine_config", "url")
REPLACE_ON = ("url",)
OUTPUT_KEYS = ("publish_id", "image", "digest", "image_bytes", "publish_seconds", "status", "pipeline_name",
               "pipeline_version", "docker_run_variables", "helm")


class PublishProvider(ResourceProvider):
    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        checked = _base.check_inputs(PublishInputs, news, PublishInputs.model_fields)
        return CheckResult(news, checked.failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.diff(olds, news, COMPARED, REPLACE_ON, normalize={"pipeline_version_pk_id": int})

    def _publish(self, props: dict[str, Any], replaces: list[int]) -> dict[str, Any]:
        client = _base.client(props)
        started = client.publish(int(props["pipeline_version_pk_id"]), engine_config=props.get("engine_config"),
                                 replaces=replaces)
        report(f"WallarooPublish: publishing {started['pipeline_name']} version {started['pipeline_version_name']} "
               f"(publish {started['id']})")
        client.wait_for_publish(started["id"], float(props.get("timeout_s") or 600), progress=report)
        return _outputs(client, started["id"])

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._publish(props, [])
        report(f"WallarooPublish: {outs['image']} ({outs['image_bytes'] // 2**20} MiB, {outs['publish_seconds']:.1f} s)")
        return CreateResult(str(outs["publish_id"]), {**props, **outs})

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        old = int(olds.get("publish_id") or id_)
        outs = self._publish(news, [old])  # the edges of `old` move here, each with an upgrade bundle
        _base.client(news).delete_publish(old)  # then its tag goes (its edges already moved)
        report(f"WallarooPublish: {outs['image']} replaces publish {old}")
        return UpdateResult({**news, **outs})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        client = _base.client(props)
        try:
            outs = _outputs(client, int(props.get("publish_id") or id_))
            status = client.publish_status(outs["publish_id"])
        except NotFoundError:
            return ReadResult(None, {})
        live = {"url": props.get("url"), "pipeline_version_pk_id": status["pipeline_version_id"],
                "engine_config": props.get("engine_config"), "timeout_s": props.get("timeout_s"), **outs,
                "token": _base.secret(props.get("token"))}
        return _base.read_result(id_, live, PublishInputs.model_fields)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            _base.client(props).delete_publish(int(props.get("publish_id") or id_))
        except NotFoundError:
            pass


def _outputs(client: Any, publish_id: int) -> dict[str, Any]:
    status = client.publish_status(publish_id)
    image = client.publish_image(publish_id)
    return {"publish_id": publish_id, "image": image["image"], "digest": image["digest"], "image_bytes": image["bytes"],
            "publish_seconds": image["publish_seconds"], "status": status["status"],
            "pipeline_name": status["pipeline_name"], "pipeline_version": status["pipeline_version_name"],
            "docker_run_variables": status["docker_run_variables"], "helm": status["helm"]}


class WallarooPublish(Resource, module="wallaroo", name="Publish"):
    """A pipeline version as an OCI image in the runtime's registry (the runtime started with
    --publish-registry): the runtime image plus the version's models and config, no credentials.
    Give `pipeline` (its current version) or `pipeline_version_pk_id`. A new version updates it in place:
    a new publish replacing this one (its edges get upgrade bundles), the old tags deleted. Destroying it
    deletes its image and chart tags and its edges.

    Outputs: `publish_id`, `image` (what `docker run` / `podman run` start), `digest`, `image_bytes`,
    `publish_seconds`, `status`, `pipeline_name`, `pipeline_version`, `docker_run_variables`,
    `helm` (its Helm chart: `chart`, `version`, `reference`, `values`).
    """

    publish_id: pulumi.Output[int]
    image: pulumi.Output[str]
    digest: pulumi.Output[str]
    image_bytes: pulumi.Output[int]
    publish_seconds: pulumi.Output[float]
    status: pulumi.Output[str]
    pipeline_name: pulumi.Output[str]
    pipeline_version: pulumi.Output[str]
    docker_run_variables: pulumi.Output[dict]
    helm: pulumi.Output[Any]

    def __init__(self, resource_name: str, *, pipeline: Any = None, pipeline_version_pk_id: pulumi.Input[int] | None = None,
                 engine_config: pulumi.Input[dict] | None = None, timeout_s: float = 600,
                 connection: Connection | None = None, opts: pulumi.ResourceOptions | None = None) -> None:
        if (pipeline is None) == (pipeline_version_pk_id is None):
            raise ValueError(f"WallarooPublish {resource_name}: give pipeline or pipeline_version_pk_id (one of them)")
        url, token = resolve(connection)
        props = {
            "pipeline_version_pk_id": pipeline.pipeline_version_pk_id if pipeline is not None else pipeline_version_pk_id,
            "engine_config": version_keyed(engine_config), "timeout_s": timeout_s, "url": url, "token": token,
            **{k: None for k in OUTPUT_KEYS},
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["token"]))
        super().__init__(PublishProvider(), resource_name, props, opts)
