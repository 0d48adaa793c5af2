"""`WallarooClient`: the typed client for the runtime's Wallaroo-compatible MLOps API, composed from
one mixin per area."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas costs ~0.25 s to import: only the methods that return frames load it,
    pass  # not every Pulumi provider process and program that merely connects

from wallaroo_pulumi.client.errors import (
    RuntimeUnavailableError,
    WallarooError,
)
from wallaroo_pulumi.client.inference import InferenceAPI
from wallaroo_pulumi.client.keys import KeysAPI
from wallaroo_pulumi.client.model_config import ModelConfigAPI
from wallaroo_pulumi.client.models import Workspace
from wallaroo_pulumi.client.orchestrations import OrchestrationsAPI
from wallaroo_pulumi.client.pipelines import PipelinesAPI
from wallaroo_pulumi.client.publish import PublishAPI
from wallaroo_pulumi.client.registry import ModelsAPI
from wallaroo_pulumi.client.tasks import TasksAPI
from wallaroo_pulumi.client.transport import Transport


class WallarooClient(KeysAPI, ModelConfigAPI, ModelsAPI, PipelinesAPI, PublishAPI, InferenceAPI, TasksAPI,
                     OrchestrationsAPI):
    """Client for the bundled runtime (or any server speaking the same API). Flat, like Wallaroo's own
    client; each area's methods live in a module of their own (registry, pipelines, inference, tasks, keys,
    model_config, publish).

    >>> client = WallarooClient.from_data_dir("~/.wallaroo-pulumi")
    >>> client.health()
    """

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._transport = Transport(self.url, token, timeout)
        self._deployment_ids: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"WallarooClient(url={self.url!r})"

    def __enter__(self) -> WallarooClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    @classmethod
    def from_data_dir(cls, path: str | os.PathLike[str], timeout: float = 60.0) -> WallarooClient:
        """Connect to the runtime serving `path` (reads `runtime.json` and `admin.token`)."""
        data_dir = Path(path).expanduser()
        info_path = data_dir / "runtime.json"
        try:
            info = json.loads(info_path.read_text())
        except FileNotFoundError:
            raise RuntimeUnavailableError(f"(no {info_path}: is a runtime serving {data_dir}?)") from None
        try:
            token = (data_dir / "admin.token").read_text().strip()
        except FileNotFoundError:
            raise WallarooError(f"no admin token at {data_dir / 'admin.token'}") from None
        return cls(info["url"], token, timeout=timeout)

    # -- basics ------------------------------------------------------------
    def _post(self, path: str, payload: dict[str, Any], context: str = "", **kw: Any) -> Any:
        return self._transport.post_json(path, payload, context=context, **kw)

    def _graphql(self, query: str, variables: dict[str, Any], context: str) -> dict[str, Any]:
        """A query of Wallaroo's GraphQL (what the SDK reads objects with); errors raise WallarooError."""
        data = self._post("/v1/graphql", {"query": query, "variables": variables}, context)
        if data.get("errors"):
            raise WallarooError(f"{context}: " + "; ".join(e.get("message", str(e)) for e in data["errors"]), body=data)
        return data["data"]

    def health(self) -> dict[str, Any]:
        return self._transport.request("GET", "/health", context="health", auth=False).json()

    def list_workspaces(self) -> list[Workspace]:
        data = self._post("/v1/api/workspaces/list", {}, "list workspaces")
        return [Workspace.model_validate(w) for w in data["workspaces"]]

    def create_workspace(self, name: str) -> Workspace:
        data = self._post("/v1/api/workspaces/create", {"workspace_name": name}, f"create workspace {name!r}")
        if "workspace" in data:
            return Workspace.model_validate(data["workspace"])
        return next(w for w in self.list_workspaces() if w.id == data["workspace_id"])
