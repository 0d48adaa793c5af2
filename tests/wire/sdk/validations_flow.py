"""Runs INSIDE the pinned Wallaroo SDK's venv (scripts/wallaroo-sdk): `pipeline.add_validations` and
the builder's `replace_with_validations`, unchanged, against the runtime; next to each answer, what
polars 0.18.15 itself (the SDK's pin) computes for the same expressions over the same rows.
Prints one JSON object.

usage: python validations_flow.py URL TOKEN WORKDIR MODEL_ZIP   (the model: y = 2x)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa

url, token, workdir, model_zip = sys.argv[1:5]
work = Path(workdir)
credentials = work / "credentials.json"
credentials.write_text(json.dumps({"token": token, "user_email": "sdk@example.com", "user_id": "sdk-user"}))
os.environ["WALLAROO_SDK_CREDENTIALS"] = str(credentials)

import wallaroo  # noqa: E402 - reads its credentials path at Client() time
from wallaroo.deployment_config import DeploymentConfigBuilder  # noqa: E402
from wallaroo.framework import Framework  # noqa: E402

XS = [1.0, 3.0, -1.0, -4.0, 0.5, 2.0]
VALIDATIONS = {
    "too_high": pl.col("out.y") > 5.0,
    "negative_in": pl.col("in.x") < 0,
    "far_or_missing": (pl.col("out.y").abs() >= 4) | pl.col("in.x").is_null(),
    "between": pl.col("in.x").is_between(-2, 2),
    "listed": pl.col("in.x").is_in([1.0, 3.0]),
    "scaled": ~((pl.col("out.y") / 4 + 1) < pl.col("in.x") * 2),
}
REPLACED = {"too_low": pl.col("out.y") < -3}
out: dict = {}


def polars_says(frame: pd.DataFrame, validations: dict[str, pl.Expr]) -> dict[str, list]:
    """Each validation as polars 0.18.15 evaluates it over the answer's in.x / out.y."""
    data = pl.DataFrame({"in.x": XS, "out.y": frame["out.y"].tolist()})
    done = data.select([expr.alias(name) for name, expr in validations.items()])
    return {name: done[name].to_list() for name in validations}


def answer(frame: pd.DataFrame, validations: dict[str, pl.Expr]) -> dict[str, list]:
    return {name: [None if pd.isna(v) else bool(v) for v in frame[f"anomaly.{name}"]] for name in validations}


wl = wallaroo.Client(api_endpoint=url, auth_type="token")
model = wl.upload_model("sdk-double", model_zip, framework=Framework.CUSTOM,
                        input_schema=pa.schema([("x", pa.float64())]), output_schema=pa.schema([("y", pa.float64())]))
pipeline = wl.build_pipeline("sdk-checks")
pipeline.add_model_step(model)
pipeline.add_validations(**VALIDATIONS)
out["definition_step"] = list(pipeline.builder().config().to_json()["steps"][-1])
config = DeploymentConfigBuilder().cpus(0.25).memory("256Mi").build()
pipeline.deploy(deployment_config=config)

frame = pipeline.infer(pd.DataFrame({"x": XS}))
out["columns"] = [c for c in frame.columns if c.startswith("anomaly.")]
out["runtime"] = answer(frame, VALIDATIONS)
out["polars"] = polars_says(frame, VALIDATIONS)
out["count"] = frame["anomaly.count"].tolist()
table = pipeline.infer(pa.table({"x": pa.array(XS, pa.float64())}))
out["arrow"] = {name: table[f"anomaly.{name}"].to_pylist() for name in VALIDATIONS}
logs = pipeline.logs()
out["logs"] = {"columns": [c for c in logs.columns if c.startswith("anomaly.")], "rows": len(logs),
               "count": int(logs["anomaly.count"].sum())}

pipeline.builder().replace_with_validations(1, **REPLACED)
pipeline.deploy(deployment_config=config)
replaced = pipeline.infer(pd.DataFrame({"x": XS}))
out["replaced"] = {"columns": [c for c in replaced.columns if c.startswith("anomaly.")],
                   "runtime": answer(replaced, REPLACED), "polars": polars_says(replaced, REPLACED)}
pipeline.undeploy()
print(json.dumps(out, default=str))
