"""The client's orchestrations API: upload a zip, read its packaging status, list; mixed into
`WallarooClient`."""

from __future__ import annotations

import json
import time
import uuid

import httpx

from wallaroo_pulumi.client._shared import ClientArea
from wallaroo_pulumi.client.errors import WallarooError
from wallaroo_pulumi.client.models import Orchestration


class OrchestrationsAPI(ClientArea):
    """Mixed into `WallarooClient`."""

    def upload_orchestration(self, content: bytes, file_name: str, name: str | None = None,
                             workspace_id: int = 1) -> Orchestration:
        """Upload an orchestration zip (main.py, at most one requirements.txt); it packages in the
        background: see `wait_for_orchestration`."""
        boundary = f"wallaroo-{uuid.uuid4().hex}"
        metadata = json.dumps({"workspace_id": workspace_id, "name": name})
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
            f"Content-Type: application/json\r\n\r\n{metadata}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        response = self._transport.request(
            "POST", "/v1/api/orchestration/upload", content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=httpx.Timeout(max(self._transport.timeout, 600.0), connect=10.0),
            context=f"upload orchestration {name or file_name!r}",
        )
        return self.get_orchestration(response.json()["id"])

    def get_orchestration(self, orch_id: str) -> Orchestration:
        return Orchestration.model_validate(
            self._post("/v1/api/orchestration/get_by_id", {"id": orch_id}, f"orchestration {orch_id}"))

    def list_orchestrations(self, workspace_id: int = 1) -> list[Orchestration]:
        found = self._post("/v1/api/orchestration/list", {"workspace_id": workspace_id}, "list orchestrations")
        return [Orchestration.model_validate(o) for o in found]

    def wait_for_orchestration(self, orch_id: str, timeout_s: float = 900.0, poll_s: float = 0.25) -> Orchestration:
        """The orchestration once packaged; WallarooError naming pip's reason when it failed."""
        deadline = time.monotonic() + timeout_s
        while True:
            orch = self.get_orchestration(orch_id)
            if orch.status == "ready":
                return orch
            if orch.status == "error":
                raise WallarooError(f"orchestration {orch.name or orch_id} failed to package: {orch.error}")
            if time.monotonic() > deadline:
                raise WallarooError(f"orchestration {orch_id}: still {orch.status} after {timeout_s:g}s")
            time.sleep(poll_s)

    def delete_orchestration(self, orch_id: str) -> int:
        """Delete an upload no live task uses; the bytes freed (0 while another upload holds the same zip)."""
        return self._post("/v1/api/orchestration/delete_orchestrations", {"orchestrations": [orch_id]},
                          f"delete orchestration {orch_id}")["bytes"]
