"""Runs INSIDE the pinned Wallaroo SDK's venv (scripts/wallaroo-sdk): the SDK's publish flow,
unchanged, against a runtime that publishes to a registry. Prints one JSON object.

usage: python publish_flow.py URL TOKEN WORKDIR MODEL_ZIP
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pyarrow as pa

url, token, workdir, model_zip = sys.argv[1:5]
work = Path(workdir)
credentials = work / "credentials.json"
credentials.write_text(json.dumps({"token": token, "user_email": "sdk@example.com", "user_id": "sdk-user"}))
os.environ["WALLAROO_SDK_CREDENTIALS"] = str(credentials)

import wallaroo  # noqa: E402
from wallaroo.framework import Framework  # noqa: E402

out: dict = {}
wl = wallaroo.Client(api_endpoint=url, auth_type="token")
model = wl.upload_model("sdk-edge-model", model_zip, framework=Framework.CUSTOM,
                        input_schema=pa.schema([("x", pa.float64())]), output_schema=pa.schema([("y", pa.float64())]))
pipeline = wl.build_pipeline("sdk-edge")
pipeline.add_model_step(model)

pub = pipeline.publish()
out["publish"] = {"id": pub.id, "status": str(pub.status), "pipeline_url": pub.pipeline_url,
                  "engine_url": pub.engine_url, "pipeline_name": pub.pipeline_name,
                  "version": str(pub.pipeline_version_name), "created_at": str(pub.created_at)}

with_edge = pub.add_edge("sdk-edge-1", tags=["store"])
bundle = dict(with_edge.edge_bundles)["sdk-edge-1"]  # a plain dict once PipelinePublish re-reads it
out["bundle_lines"] = base64.b64decode(bundle).decode().splitlines()
# the SDK builds helm commands for every bundle a publish carries, from the chart's values
listed_with_bundle = [e.name for e in with_edge.list_edges()]

edges = pub.list_edges()
out["edges"] = [{"name": e.name, "tags": e.tags, "publish": e.should_run_publish} for e in edges]
out["pipeline_edges"] = [e.name for e in pipeline.list_edges()]
out["publishes"] = [p.id for p in pipeline.publishes()]
out["client_publishes"] = [p.id for p in wl.list_publishes()]

upgrade = pipeline.publish(replaces=[pub])
out["upgrade"] = {"id": upgrade.id, "replaces": [dict(r) if isinstance(r, dict) else r.to_dict() for r in upgrade.replaces],
                  "bundles": sorted(dict(upgrade.edge_bundles))}
fresh = {p.id: p for p in pipeline.publishes()}  # as listed: no bundles in them
out["edges_after_upgrade"] = {"old": [e.name for e in fresh[pub.id].list_edges()],
                              "new": [e.name for e in fresh[upgrade.id].list_edges()]}
out["list_edges_with_bundles"] = {"upgrade": [e.name for e in upgrade.list_edges()], "add_edge": listed_with_bundle}
helm_install = upgrade._generate_commands()[0]  # the helm commands its HTML view shows, one per edge bundle
out["helm"] = {"publish": pub.helm, "install": f"oci://{pub.helm['chart']}" in helm_install and "edgeBundle=" in helm_install}

fresh[upgrade.id].remove_edge("sdk-edge-1")
out["edges_after_remove"] = [e.name for e in fresh[upgrade.id].list_edges()]
print(json.dumps(out, default=str))
