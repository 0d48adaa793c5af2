"""Publishing a pipeline version to a registry and its edges (Wallaroo's publish endpoints, and ours:
get_publish_image, delete_publish)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from wallaroo_pulumi.client._shared import ClientArea
from wallaroo_pulumi.client.errors import WallarooError


class PublishAPI(ClientArea):
    """Mixed into `WallarooClient`."""

    def publish(self, pipeline_version_pk_id: int, model_config_ids: list[int] | None = None,
                engine_config: dict[str, Any] | None = None, replaces: list[int] | None = None) -> dict[str, Any]:
        """Start a publish (PendingPublish); `wait_for_publish` follows it."""
        body = {"pipeline_version_id": pipeline_version_pk_id, "model_config_ids": model_config_ids or [],
                "engine_config": engine_config, "replaces": replaces or []}
        return self._post("/v1/api/pipelines/publish", body, f"publish pipeline version {pipeline_version_pk_id}")

    def publish_status(self, publish_id: int, include_replace_bundles: bool = False) -> dict[str, Any]:
        return self._post("/v1/api/pipelines/get_publish_status",
                          {"id": publish_id, "include_replace_bundles": include_replace_bundles},
                          f"publish {publish_id}")

    def wait_for_publish(self, publish_id: int, timeout_s: float = 600, progress: Callable[[str], None] | None = None,
                         include_replace_bundles: bool = False) -> dict[str, Any]:
        """Poll until Published (its status) or Error (WallarooError with the runtime's reason)."""
        deadline, last = time.monotonic() + timeout_s, None
        while True:
            status = self.publish_status(publish_id, include_replace_bundles)
            if status["status"] != last and progress is not None:
                progress(f"publish {publish_id}: {status['status']}")
            last = status["status"]
            if status["status"] == "Published":
                return status
            if status["status"] == "Error":
                raise WallarooError(f"publish {publish_id} failed: {status.get('error')}")
            if time.monotonic() > deadline:
                raise WallarooError(f"publish {publish_id} is still {status['status']} after {timeout_s:.0f} s")
            time.sleep(0.5)

    def publish_image(self, publish_id: int) -> dict[str, Any]:
        """The image, digest, size in the registry and push time of a publish."""
        return self._post("/v1/api/pipelines/get_publish_image", {"id": publish_id}, f"publish {publish_id}")

    def delete_publish(self, publish_id: int) -> dict[str, Any]:
        return self._post("/v1/api/pipelines/delete_publish", {"id": publish_id}, f"delete publish {publish_id}")

    def add_edge(self, publish_id: int, name: str, tags: list[str] | None = None) -> dict[str, Any]:
        """The publish, its `edge_bundles` holding this edge's bundle (the only time it is given)."""
        return self._post("/v1/api/pipelines/add_edge_to_publish",
                          {"name": name, "pipeline_publish_id": publish_id, "tags": tags or []}, f"add edge {name!r}")

    def remove_edge(self, name: str) -> None:
        self._post("/v1/api/pipelines/remove_edge", {"name": name}, f"remove edge {name!r}")

    def list_edges(self, publish_id: int) -> list[dict[str, Any]]:
        return self._post("/v1/api/pipelines/list_edges_by_publish_id", {"publish_id": publish_id},
                          f"edges of publish {publish_id}")["edges"]

    def all_edges(self) -> list[dict[str, Any]]:
        """Every edge of every publish (the SDK's Edge fields; `should_run_publish` is its publish)."""
        return self._post("/v1/api/pipelines/list_publishes_for_pipeline", {}, "edges")["edges"]
