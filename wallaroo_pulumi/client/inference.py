"""The client's inference API: infer (pandas records or Arrow), infer from a file, and the inference logs; mixed into `WallarooClient`."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pyarrow as pa

if TYPE_CHECKING:  # pandas costs ~0.25 s to import: only the methods that return frames load it,
    import pandas as pd  # not every Pulumi provider process and program that merely connects

from wallaroo_pulumi.client._shared import (
    ARROW_FILE,
    ARROW_STREAM,
    JSON_RECORDS,
    ClientArea,
    iso,
    records_to_frame,
)
from wallaroo_pulumi.client.errors import (
    AuthError,
    InferenceError,
    NotFoundError,
    WallarooError,
)


class InferenceAPI(ClientArea):
    """Mixed into `WallarooClient`; uses `get_pipeline` (PipelinesAPI) to find a pipeline's deployment."""

    def _infer_path(self, pipeline_name: str) -> str:
        dep = self._deployment_ids.get(pipeline_name)
        if dep is None:
            try:
                pipeline = self.get_pipeline(pipeline_name)
            except AuthError as exc:
                if exc.status_code != 403:
                    raise
                return f"/v1/api/pipelines/infer/{pipeline_name}"  # an inference-only key: its current deployment
            if not pipeline.deployed or pipeline.deployment_id is None:
                raise NotFoundError(f"pipeline {pipeline_name!r} is not deployed (status: {pipeline.status})")
            dep = pipeline.deployment_id
        return f"/v1/api/pipelines/infer/{pipeline_name}-{dep}/{pipeline_name}"

    def _infer_raw(self, pipeline_name: str, body: bytes, content_type: str, accept: str, timeout: float | None) -> httpx.Response:
        try:
            return self._transport.request(
                "POST", self._infer_path(pipeline_name), content=body,
                headers={"Content-Type": content_type, "Accept": accept},
                timeout=timeout, context=f"inference on {pipeline_name!r}",
            )
        except NotFoundError:
            if pipeline_name not in self._deployment_ids:
                raise
            self._deployment_ids.pop(pipeline_name)  # maybe a stale deployment id: look it up once more
            return self._transport.request(
                "POST", self._infer_path(pipeline_name), content=body,
                headers={"Content-Type": content_type, "Accept": accept},
                timeout=timeout, context=f"inference on {pipeline_name!r}",
            )
        except WallarooError as exc:
            if exc.status_code is not None and exc.status_code >= 500:
                raise InferenceError(exc.message, status_code=exc.status_code, body=exc.body) from None
            raise

    def infer(
        self, pipeline_name: str, data: pd.DataFrame | pa.Table, timeout: float | None = None
    ) -> pd.DataFrame | pa.Table:
        """DataFrame in -> pandas-records JSON -> DataFrame out (`time`, `in.*`, `out.*`, ...);
        Arrow Table in -> Arrow file -> Arrow Table out."""
        import pandas as pd
        if isinstance(data, pa.Table):
            sink = io.BytesIO()
            with pa.ipc.new_file(sink, data.schema) as writer:
                writer.write_table(data)
            response = self._infer_raw(pipeline_name, sink.getvalue(), ARROW_FILE, ARROW_FILE, timeout)
            return pa.ipc.open_file(pa.py_buffer(response.content)).read_all()
        if isinstance(data, pd.DataFrame):
            body = data.to_json(orient="records").encode()
            response = self._infer_raw(pipeline_name, body, JSON_RECORDS, JSON_RECORDS, timeout)
            return records_to_frame(response.json())
        raise TypeError(f"data must be a pandas.DataFrame or pyarrow.Table, got {type(data).__name__}")

    def infer_from_file(self, pipeline_name: str, path: str | os.PathLike[str], timeout: float | None = None):
        """Send a `.json` (pandas records) or `.arrow` (IPC file) as-is, as the docs' curl does."""
        path = Path(path)
        body = path.read_bytes()
        if path.suffix.lower() == ".json":
            response = self._infer_raw(pipeline_name, body, JSON_RECORDS, JSON_RECORDS, timeout)
            return records_to_frame(response.json())
        if path.suffix.lower() in (".arrow", ".feather", ".arrows"):
            ctype = ARROW_STREAM if path.suffix.lower() == ".arrows" else ARROW_FILE
            response = self._infer_raw(pipeline_name, body, ctype, ARROW_FILE, timeout)
            return pa.ipc.open_file(pa.py_buffer(response.content)).read_all()
        raise ValueError(f"{path}: expected a .json (pandas records) or .arrow (Arrow IPC file)")

    # -- logs --------------------------------------------------------------
    def logs(
        self,
        pipeline_name: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        limit: int = 100,
        order: str = "Desc",
        workspace_id: int | None = None,
        page_size: int = 1000,
    ) -> pd.DataFrame:
        """Up to `limit` logged inferences (start <= time < end), newest first by default."""
        import pandas as pd
        if (start is None) != (end is None):
            end = end or datetime.now(UTC)
            start = start or datetime.fromtimestamp(0, UTC)
        frames: list[pd.DataFrame] = []
        cursor = None
        got = 0
        while got < limit:
            payload: dict[str, Any] = {
                "pipeline_name": pipeline_name,
                "workspace_id": workspace_id or 1,
                "order": order.lower(),
                "page_size": min(page_size, limit - got),
            }
            if start is not None:
                payload["start_time"] = iso(start)
                payload["end_time"] = iso(end)
            if cursor:
                payload["cursor"] = cursor
            response = self._transport.request(
                "POST", "/v1/api/pipelines/get_logs", json=payload,
                headers={"Accept": ARROW_FILE}, context=f"logs of {pipeline_name!r}",
            )
            table = pa.ipc.open_file(pa.py_buffer(response.content)).read_all()
            if table.num_rows:
                frames.append(table.to_pandas())
                got += table.num_rows
            cursor = response.headers.get("x-iteration-cursor")
            status = response.headers.get("x-iteration-status", "All")
            if status == "All" or not cursor or table.num_rows == 0 and status != "SchemaChange":
                break
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
