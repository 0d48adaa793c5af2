"""Runs INSIDE the pinned Wallaroo SDK's venv (scripts/wallaroo-sdk): the SDK's dynamic batching
flow against the runtime: upload a model, configure(dynamic_batching_config=DynamicBatchingConfig(...)),
read the config back, deploy, then pipeline.parallel_infer of four rows, one per request, four at
once. Prints one JSON object: the config as the SDK reads it and the batch size each row came in.

usage: python batching_flow.py URL TOKEN WORKDIR MODEL_ZIP
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa

url, token, workdir, model_zip = sys.argv[1:5]
credentials = Path(workdir) / "credentials.json"  # the token auth of wallaroo/auth.py
credentials.write_text(json.dumps({"token": token, "user_email": "sdk@example.com", "user_id": "sdk-user"}))
os.environ["WALLAROO_SDK_CREDENTIALS"] = str(credentials)

import wallaroo  # noqa: E402 - reads its credentials path at Client() time
from wallaroo.dynamic_batching_config import DynamicBatchingConfig  # noqa: E402
from wallaroo.framework import Framework  # noqa: E402

out: dict = {}
wl = wallaroo.Client(api_endpoint=url, auth_type="token")
model = wl.upload_model("sdk-batched", model_zip, framework=Framework.CUSTOM,
                        input_schema=pa.schema([("x", pa.float64())]),
                        output_schema=pa.schema([("y", pa.float64()), ("batch_rows", pa.int64())]))
model = model.configure(dynamic_batching_config=DynamicBatchingConfig(max_batch_delay_ms=3000, batch_size_target=4,
                                                                      batch_size_limit=8))
out["config"] = model.config().dynamic_batching_config().to_json()

pipeline = wl.build_pipeline("sdk-batched")
pipeline.add_model_step(model)
pipeline.deploy()
pipeline.infer(pd.DataFrame({"x": [0.0]}))  # the deployment found and warm: the four below go at once
frame = asyncio.run(pipeline.parallel_infer(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}), batch_size=1, num_parallel=4,
                                            timeout=30))
out["y"] = [float(v) for v in frame["out.y"]]
out["batch_rows"] = [int(v) for v in frame["out.batch_rows"]]
pipeline.undeploy()
print(json.dumps(out))
