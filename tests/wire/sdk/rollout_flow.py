"""Runs INSIDE the pinned Wallaroo SDK's venv (scripts/wallaroo-sdk): the SDK's rollout calls,
unchanged, against the runtime: add/replace_with_random_split, add/replace_with_key_split,
add/replace_with_shadow_deploy, replace_with_model_step(...).deploy(), logs(). Prints one JSON
object with what each returned.

usage: python rollout_flow.py URL TOKEN WORKDIR ZIP_A ZIP_B ZIP_C ZIP_V1 ZIP_V2
(models answering y = x, 10x, 100x; then two versions of one model answering y = x * $FACTOR)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa

url, token, workdir, zip_a, zip_b, zip_c, zip_v1, zip_v2 = sys.argv[1:9]
credentials = Path(workdir) / "credentials.json"
credentials.write_text(json.dumps({"token": token, "user_email": "sdk@example.com", "user_id": "sdk-user"}))
os.environ["WALLAROO_SDK_CREDENTIALS"] = str(credentials)

import wallaroo  # noqa: E402
from wallaroo.deployment_config import DeploymentConfigBuilder  # noqa: E402
from wallaroo.framework import Framework  # noqa: E402

X = pa.schema([("x", pa.float64())])
Y = pa.schema([("y", pa.float64())])
out: dict = {}
wl = wallaroo.Client(api_endpoint=url, auth_type="token")
a, b, c = (wl.upload_model(name, path, framework=Framework.CUSTOM, input_schema=X, output_schema=Y)
           for name, path in (("sdk-a", zip_a), ("sdk-b", zip_b), ("sdk-c", zip_c)))


def served(frame: pd.DataFrame) -> list[str]:
    return [json.loads(list(v)[0])["name"] for v in frame["out._model_split"]]


def infer(pipeline, rows: list[dict]) -> pd.DataFrame:
    return pipeline.infer(pd.DataFrame(rows))


pipeline = wl.build_pipeline("sdk-rollout")
pipeline.add_random_split([(2, a), (1, b)], hash_key="id")
pipeline.deploy()
rows = [{"x": 1.0, "id": f"user-{i}"} for i in range(300)]
first = infer(pipeline, rows)
out["random_split"] = {"columns": sorted(first.columns), "served": served(first), "y": first["out.y"].tolist(),
                       "again": served(infer(pipeline, rows)), "steps": [type(s).__name__ for s in pipeline.steps()]}

pipeline.replace_with_random_split(0, [(1, a), (1, c)])
pipeline.deploy()
out["replace_with_random_split"] = sorted(set(served(infer(pipeline, rows))))

pipeline.clear()
pipeline.add_key_split(a, "tier", {"gold": b, "silver": c})
pipeline.deploy()
keyed = infer(pipeline, [{"x": 1.0, "tier": t} for t in ("gold", "silver", "bronze")])
out["key_split"] = {"served": served(keyed), "y": keyed["out.y"].tolist()}
pipeline.replace_with_key_split(0, c, "tier", {"gold": a})
pipeline.deploy()
out["replace_with_key_split"] = served(infer(pipeline, [{"x": 1.0, "tier": t} for t in ("gold", "bronze")]))

pipeline.clear()
pipeline.add_shadow_deploy(a, [b, c])
pipeline.deploy()
shadowed = infer(pipeline, [{"x": 2.0}, {"x": 3.0}])
logs = pipeline.logs(limit=2)
out["shadow"] = {"columns": sorted(shadowed.columns), "y": shadowed["out.y"].tolist(),
                 "steps": [type(s).__name__ for s in pipeline.steps()], "log_columns": sorted(logs.columns),
                 "logged": {col: sorted(logs[col].tolist()) for col in ("out.y", "out_sdk-b.y", "out_sdk-c.y")}}
pipeline.replace_with_shadow_deploy(0, b, [a])
pipeline.deploy()
out["replace_with_shadow_deploy"] = infer(pipeline, [{"x": 2.0}])["out.y"].tolist()

pipeline.clear()
pipeline.add_model_step(a)
pipeline.deploy()
pipeline.replace_with_model_step(0, c).deploy()  # the old version serves until the new one is ready
out["replace_with_model_step"] = infer(pipeline, [{"x": 1.0}])["out.y"].tolist()
out["versions"] = len(pipeline.versions())

# two versions of one model in a split, each with its own sidekick env (the builder keys by uid())
v1, v2 = (wl.upload_model("sdk-v", path, framework=Framework.CUSTOM, input_schema=X, output_schema=Y)
          for path in (zip_v1, zip_v2))
config = DeploymentConfigBuilder().sidekick_env(v1, {"FACTOR": "2"}).sidekick_env(v2, {"FACTOR": "3"}).build()
pipeline.clear()
pipeline.add_random_split([(1, v1), (1, v2)])
pipeline.deploy(deployment_config=config)
both = infer(pipeline, [{"x": 1.0}] * 200)
out["two_versions"] = {"served": [json.loads(list(v)[0])["version"] for v in both["out._model_split"]],
                       "y": both["out.y"].tolist(), "v1": v1.version(), "v2": v2.version()}
pipeline.undeploy()
print(json.dumps(out, default=str))
