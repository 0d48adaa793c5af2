"""Runs INSIDE the pinned Wallaroo SDK's venv (scripts/wallaroo-sdk): the SDK's core flow, unchanged,
against the runtime. Prints one JSON object with what each step returned.

usage: python core_flow.py URL TOKEN WORKDIR MODEL_ZIP VERTEX_ENDPOINT_URL SERVICE_ACCOUNT_JSON_FILE
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa

url, token, workdir, model_zip, vertex_url, service_account_file = sys.argv[1:7]
work = Path(workdir)
credentials = work / "credentials.json"  # the token auth of wallaroo/auth.py
credentials.write_text(json.dumps({"token": token, "user_email": "sdk@example.com", "user_id": "sdk-user"}))
os.environ["WALLAROO_SDK_CREDENTIALS"] = str(credentials)

import wallaroo  # noqa: E402 - reads its credentials path at Client() time
from wallaroo.deployment_config import DeploymentConfigBuilder  # noqa: E402
from wallaroo.framework import Framework  # noqa: E402

TEXT_IN = pa.schema([("text", pa.string())])
TEXT_OUT = pa.schema([("generated_text", pa.string()), ("prompt_tokens", pa.int64()),
                      ("completion_tokens", pa.int64()), ("error", pa.string())])
out: dict = {}

wl = wallaroo.Client(api_endpoint=url, auth_type="token")
out["workspace"] = wl.get_current_workspace().name()
model = wl.upload_model("vertex-llm", model_zip, framework=Framework.CUSTOM, input_schema=TEXT_IN, output_schema=TEXT_OUT)
out["model"] = {"name": model.name(), "status": model.status(), "uid": model.uid()}

pipeline = wl.build_pipeline("sdk-flow")
pipeline.add_model_step(model)
config = (DeploymentConfigBuilder().cpus(0.5).memory("512Mi")
          .sidekick_cpus(model, 0.5).sidekick_memory(model, "1Gi")
          .sidekick_env(model, {"APPLICATION_CREDENTIALS": Path(service_account_file).read_text(),
                                "VERTEX_ENDPOINT_URL": vertex_url})
          .build())
pipeline.deploy(deployment_config=config)
out["status"] = pipeline.status()["status"]
out["engine_config"] = pipeline._deployment.engine_config()
out["url"] = pipeline.url()

frame = pipeline.infer(pd.DataFrame({"text": ["hello from the sdk", "second row"]}))
out["infer_frame"] = {"columns": list(frame.columns), "generated_text": frame["out.generated_text"].tolist(),
                      "error": frame["out.error"].tolist()}
table = pipeline.infer(pa.table({"text": ["arrow row"]}))
out["infer_arrow"] = {"columns": table.column_names, "generated_text": table["out.generated_text"].to_pylist()}

records_file = work / "input.json"
records_file.write_text(json.dumps([{"text": "from a json file"}]))
arrow_file = work / "input.arrow"
with pa.ipc.new_file(str(arrow_file), TEXT_IN) as writer:
    writer.write_table(pa.table({"text": ["from an arrow file"]}, schema=TEXT_IN))
from_json = pipeline.infer_from_file(records_file)
from_arrow = pipeline.infer_from_file(arrow_file)
out["infer_from_file"] = {"json": from_json["out.generated_text"].tolist(),
                          "arrow": from_arrow["out.generated_text"].to_pylist()}
with_metadata = pipeline.infer(pd.DataFrame({"text": ["with metadata"]}), dataset=["*", "metadata"])
out["infer_metadata_columns"] = sorted(c for c in with_metadata.columns if c.startswith("metadata."))

try:
    pipeline.infer(pd.DataFrame({"prompt": ["no text column"]}))
except Exception as exc:  # noqa: BLE001 - the SDK's InferenceError, with the runtime's message
    out["bad_infer"] = {"type": type(exc).__name__, "message": str(exc)}
failures = pipeline.logs(valid=False)
out["failure_logs"] = {"rows": len(failures)}

logs = pipeline.logs()
out["logs"] = {"rows": len(logs), "columns": list(logs.columns), "texts": sorted(logs["in.text"].tolist())}
arrow_logs = pipeline.logs(arrow=True, limit=2)
out["logs_arrow"] = {"rows": arrow_logs.num_rows, "columns": arrow_logs.column_names}

out["listed"] = {
    "workspaces": [w.name() for w in wl.list_workspaces()],
    "models": [m.name() for m in wl.list_models()],
    "pipelines": [p.name() for p in wl.list_pipelines()],
    "get_pipeline": wl.get_pipeline("sdk-flow").name(),
}

pipeline.undeploy()
out["deployed_after_undeploy"] = pipeline._deployment.deployed()
print(json.dumps(out, default=str))
