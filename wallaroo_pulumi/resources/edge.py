"""`WallarooEdge`: an edge of a publish, its EDGE_BUNDLE (which holds a one-use join token) a secret
output. When its publish is upgraded (a new publish replacing the old), the edge moved with it and
its update takes the upgrade bundle; a new name or tags replace it."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, ReadResult, Resource, ResourceProvider, UpdateResult
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..client import NotFoundError, WallarooError
from ..names import dns_label
from . import _base
from .connection import Connection, resolve
from .progress import report


class EdgeInputs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    publish_id: int = Field(ge=1)
    tags: list[str] = Field(default_factory=list)
    url: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return dns_label(v)


COMPARED = ("name", "publish_id", "tags", "url")
REPLACE_ON = ("name", "tags", "url")
OUTPUT_KEYS = ("edge_id", "bundle", "image", "joined_at")


class EdgeProvider(ResourceProvider):
    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        checked = _base.check_inputs(EdgeInputs, news, EdgeInputs.model_fields)
        return CheckResult(news, checked.failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.diff(olds, news, COMPARED, REPLACE_ON, normalize={"publish_id": int, "tags": sorted})

    def create(self, props: dict[str, Any]) -> CreateResult:
        client = _base.client(props)
        added = client.add_edge(int(props["publish_id"]), props["name"], props.get("tags") or [])
        edge = _find(client, int(props["publish_id"]), props["name"])
        report(f"WallarooEdge {props['name']}: added to publish {props['publish_id']} ({added['pipeline_url']})")
        return CreateResult(edge["id"], {**props, "edge_id": edge["id"], "image": added["pipeline_url"],
                                         "joined_at": edge.get("joined_at"),
                                         "bundle": _base.secret(added["edge_bundles"][props["name"]])})

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Its publish was upgraded: the edge moved to the new publish, whose status gives its upgrade bundle."""
        client = _base.client(news)
        status = client.publish_status(int(news["publish_id"]), include_replace_bundles=True)
        bundle = (status.get("edge_bundles") or {}).get(news["name"])
        if bundle is None:
            raise WallarooError(f"edge {news['name']!r} is not an edge waiting to join publish {news['publish_id']}: "
                                "move an edge by upgrading its WallarooPublish (a new version), or give it a new name")
        edge = _find(client, int(news["publish_id"]), news["name"])
        report(f"WallarooEdge {news['name']}: upgrade bundle for {status['pipeline_url']}")
        return UpdateResult({**news, "edge_id": edge["id"], "image": status["pipeline_url"],
                             "joined_at": edge.get("joined_at"), "bundle": _base.secret(bundle)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """By the edge's id alone (an import knows nothing else), wherever its publish is now."""
        client = _base.client(props)
        found = [e for e in client.all_edges() if e["id"] == id_]
        if not found:
            return ReadResult(None, {})
        edge = _find(client, int(found[0]["should_run_publish"]), found[0]["name"])
        live = {"name": edge["name"], "publish_id": edge["should_run_publish"], "tags": edge["tags"],
                "url": props.get("url"), "edge_id": edge["id"],
                "image": client.publish_status(int(edge["should_run_publish"]))["pipeline_url"],
                "joined_at": edge.get("joined_at"), "bundle": _base.secret(props.get("bundle")),
                "token": _base.secret(props.get("token"))}
        return _base.read_result(id_, live, EdgeInputs.model_fields)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            _base.client(props).remove_edge(props["name"])
        except NotFoundError:
            pass


def _find(client: Any, publish_id: int, name: str) -> dict[str, Any]:
    for edge in client.list_edges(publish_id):
        if edge["name"] == name:
            return edge
    raise NotFoundError(f"edge {name!r}: not an edge of publish {publish_id}")


class WallarooEdge(Resource, module="wallaroo", name="Edge"):
    """An edge box of a `WallarooPublish`: `bundle` (secret) is its EDGE_BUNDLE, to start the published
    image with (`podman run -v DIR:/persist -p PORT:8080 -e EDGE_BUNDLE=... IMAGE`, each step's
    credentials as -e NAME=value). Its join token works once. When the publish is upgraded the edge moves
    with it and `bundle` becomes its upgrade bundle. Destroying it removes the edge: its logs are refused.
    Import with `opts=ResourceOptions(import_=EDGE_ID)` and the same name and publish.

    Outputs: `edge_id`, `bundle` (secret), `image`, `joined_at`.
    """

    edge_id: pulumi.Output[str]
    bundle: pulumi.Output[str]
    image: pulumi.Output[str]
    joined_at: pulumi.Output[str]

    def __init__(self, resource_name: str, *, publish: Any = None, publish_id: pulumi.Input[int] | None = None,
                 name: str | None = None, tags: list[str] | None = None, connection: Connection | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        if (publish is None) == (publish_id is None):
            raise ValueError(f"WallarooEdge {resource_name}: give publish or publish_id (one of them)")
        url, token = resolve(connection)
        props = {"name": name or resource_name, "publish_id": publish.publish_id if publish is not None else publish_id,
                 "tags": tags or [], "url": url, "token": token, **{k: None for k in OUTPUT_KEYS}}
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["token", "bundle"]))
        super().__init__(EdgeProvider(), resource_name, props, opts)
