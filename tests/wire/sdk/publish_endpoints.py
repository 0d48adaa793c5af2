"""Runs INSIDE the pinned Wallaroo SDK's venv: the publish endpoints through the SDK's generated
client (`sync_detailed`), one JSON line per call, as endpoints.py prints them.

usage: python publish_endpoints.py URL TOKEN PIPELINE_ID PIPELINE_VERSION_ID MODEL_CONFIG_ID
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from wallaroo.wallaroo_ml_ops_api_client.api.pipelines import (
    add_edge_to_publish,
    get_publish_status,
    list_edges_by_publish_id,
    list_publishes_for_pipeline,
    publish_pipeline,
    remove_edge,
)
from wallaroo.wallaroo_ml_ops_api_client.client import AuthenticatedClient
from wallaroo.wallaroo_ml_ops_api_client.models import (
    AddEdgeToPublishBody,
    GetPublishStatusBody,
    ListEdgesByPublishIdBody,
    ListPublishesForPipelineBody,
    PipelinePublishStatus,
    PublishPipelineBody,
    RemoveEdgeBody,
)

url, token, pipeline_id, version_id, config_id = sys.argv[1:6]
client = AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=False)


def report(endpoint: str, response: Any) -> Any:
    parsed = response.parsed
    kind = None if parsed is None else type(parsed).__name__
    value = getattr(getattr(parsed, "status", None), "value", None)
    print(json.dumps({"endpoint": endpoint, "status": int(response.status_code), "parsed": kind, "value": value}),
          flush=True)
    return parsed


started = report("pipelines/publish", publish_pipeline.sync_detailed(client=client, body=PublishPipelineBody(
    model_config_ids=[int(config_id)], pipeline_version_id=int(version_id), replaces=[])))
deadline = time.monotonic() + 120
while True:
    status = get_publish_status.sync_detailed(client=client, body=GetPublishStatusBody(id=started.id))
    if status.parsed.status in (PipelinePublishStatus.PUBLISHED, PipelinePublishStatus.ERROR) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
report("pipelines/get_publish_status", status)
report("pipelines/add_edge_to_publish", add_edge_to_publish.sync_detailed(client=client, body=AddEdgeToPublishBody(
    name="wire-edge", pipeline_publish_id=started.id, tags=["wire"])))
report("pipelines/list_edges_by_publish_id", list_edges_by_publish_id.sync_detailed(
    client=client, body=ListEdgesByPublishIdBody(publish_id=started.id)))
report("pipelines/list_publishes_for_pipeline", list_publishes_for_pipeline.sync_detailed(
    client=client, body=ListPublishesForPipelineBody(pipeline_id=int(pipeline_id))))
report("pipelines/remove_edge", remove_edge.sync_detailed(client=client, body=RemoveEdgeBody(name="wire-edge")))
