"""Pages of a pipeline's logged inferences (and of its listeners' scores), by pipeline or by
log topic (`workspace-<id>-pipeline-<name>-inference`, `...-failures` for failed ones)."""

from __future__ import annotations

from datetime import datetime

import anyio
import pyarrow as pa
import pyarrow.compute as pc

from wallaroo_pulumi.runtime.core.errors import BadRequest, NotFound
from wallaroo_pulumi.runtime.services.pipelines import Pipelines
from wallaroo_pulumi.runtime.store.logs import LogPage, LogStore, Order
from wallaroo_pulumi.runtime.wire.answers import TOPIC, topic_name


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

    def topic(self, pipeline_pk_id: int | None, pipeline_name: str | None, workspace_id: int | None) -> str:
        """`plateau/get_topic_name`: a pipeline's log topic."""
        pipeline = self.pipelines.find(pipeline_pk_id, pipeline_name if pipeline_pk_id is None else None, workspace_id)
        return topic_name(pipeline["workspace_id"], pipeline["name"])

    async def topic_page(
        self, topic: str, start: datetime | None, end: datetime | None, page_size: int, order: Order, cursor: str | None,
    ) -> LogPage:
        """A page of a topic: up to `page_size` of the pipeline's inferences that succeeded, or with
        `-failures` of those that failed (read on over the store's pages until it has them)."""
        match = TOPIC.match(topic)
        if match is None:
            raise NotFound(f"topic: no log topic {topic!r}; ask plateau/get_topic_name for a pipeline's topic")
        tables: list[pa.Table] = []
        rows = 0
        while True:
            page = await self.page(match[2], int(match[1]), start, end, page_size - rows, order, cursor)
            table = page.table
            if "metadata.error" in table.column_names:
                failed = pc.is_valid(table.column("metadata.error"))
                table = table.filter(failed if match[3] else pc.invert(failed))
            tables.append(table)
            rows += table.num_rows
            cursor = page.cursor
            if rows >= page_size or not cursor or page.status == "SchemaChange":
                merged = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
                return LogPage(merged, cursor, page.status)
