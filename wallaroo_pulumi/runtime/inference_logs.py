"""Pages of a pipeline's logged inferences (and of its listeners' scores)."""

from __future__ import annotations

from datetime import datetime

import anyio

from wallaroo_pulumi.runtime.errors import BadRequest, NotFound
from wallaroo_pulumi.runtime.logstore import LogPage, LogStore, Order
from wallaroo_pulumi.runtime.pipelines import Pipelines


class InferenceLogs:
    def __init__(self, pipelines: Pipelines, logstore: LogStore) -> None:
        self.pipelines = pipelines
        self.logstore = logstore

    async def page(
        self, pipeline_name: str, workspace_id: int, start: datetime | None, end: datetime | None,
        page_size: int, order: Order, cursor: str | None,
    ) -> LogPage:
        if self.pipelines.by_name(pipeline_name, workspace_id) is None and pipeline_name not in self.logstore.pipelines():
            raise NotFound(f"pipeline_name: no pipeline named {pipeline_name!r} in workspace {workspace_id}")
        try:
            return await anyio.to_thread.run_sync(
                lambda: self.logstore.query(pipeline_name, start, end, page_size, order, cursor)
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
