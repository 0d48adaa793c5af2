"""WallarooPipeline rollout steps through the real engine: a canary split moved 10% -> 50% -> 100%
by `pulumi up` (an in-place update each time, the canary's users staying on it), import of a
split pipeline, a shadow deploy, destroy."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, write_model

PROGRAM = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import RandomSplit, Shadow, WallarooModel, WallarooPipeline

cfg = pulumi.Config()
schema = dict(input_schema=pa.schema([("x", pa.float64())]), output_schema=pa.schema([("y", pa.float64())]))
stable = WallarooModel("stable", path=cfg.require("stable"), **schema)
canary = WallarooModel("canary", path=cfg.require("canary"), **schema)
weight = float(cfg.get("canary_weight") or 10)
if cfg.get("kind") == "shadow":
    steps = [Shadow(stable, [canary])]
else:
    steps = [RandomSplit({stable: 100 - weight, canary: weight}, hash_key="user_id")]
pipeline = WallarooPipeline("pipe", name="canary-pipe", steps=steps, deploy_timeout_s=90,
                            opts=pulumi.ResourceOptions(import_=cfg.get("adopt_id")))
for key in ("pipeline_id", "version", "status"):
    pulumi.export(key, getattr(pipeline, key))
"""
USERS = [f"user-{i}" for i in range(2000)]


def served(api: WallarooClient) -> dict[str, str]:
    """Which model served each user."""
    api._deployment_ids.clear()
    out = api.infer("canary-pipe", pd.DataFrame({"x": [1.0] * len(USERS), "user_id": USERS}))
    who = {u: json.loads(split[0])["name"] for u, split in zip(USERS, out["out._model_split"], strict=True)}
    assert all(y == (10.0 if who[u] == "canary" else 1.0) for u, y in zip(USERS, out["out.y"], strict=True))
    return who


def share(who: dict[str, str]) -> float:
    return sum(1 for m in who.values() if m == "canary") / len(who)


def test_a_canary_moves_by_pulumi_up(stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("stable", str(write_model(tmp_path / "stable", factor=1.0)))
    stack.config_set("canary", str(write_model(tmp_path / "canary", factor=10.0)))
    stack.up()
    assert stack.outputs()["status"] == "Running"
    ten = served(api)
    # 2000 users at p=0.1: sd 0.0067; 0.03 is ~4.5 sd (at p=0.5 below: sd 0.011, 0.04 is ~3.6 sd)
    assert abs(share(ten) - 0.1) < 0.03
    assert served(api) == ten  # sticky: the same users, the same models
    assert stack.preview().change_summary == {"same": 4}

    stack.config_set("canary_weight", "50")
    assert changed(stack.preview()) == {"pipe": "update"}  # only the weights: an update in place
    stack.up()
    fifty = served(api)
    assert abs(share(fifty) - 0.5) < 0.04
    assert all(fifty[u] == "canary" for u, m in ten.items() if m == "canary")  # canary users stay on it

    stack.config_set("canary_weight", "100")
    stack.up()
    assert share(served(api)) == 1.0

    # import: forget the pipeline, adopt it by id; the program and what is live agree
    pipeline_id = stack.outputs()["pipeline_id"]
    urn = next(r["urn"] for r in stack.resources("wallaroo:Pipeline"))
    stack.run("state", "delete", urn, "--yes")
    stack.config_set("adopt_id", str(pipeline_id))
    result = stack.up()
    assert [s["op"] for s in result.steps if s["urn"].endswith("::pipe")][0] == "import"
    assert stack.preview().change_summary == {"same": 4}
    stack.run("config", "rm", "adopt_id")

    # a shadow: the stable model answers, the canary's answers are only logged
    stack.config_set("kind", "shadow")
    assert changed(stack.preview()) == {"pipe": "update"}
    stack.up()
    api._deployment_ids.clear()
    out = api.infer("canary-pipe", pd.DataFrame({"x": [3.0]}))
    assert out["out.y"].tolist() == [3.0] and not [c for c in out.columns if c.startswith("out_")]
    logs = api.logs("canary-pipe", limit=1)
    assert logs["out_canary.y"].tolist() == [30.0]

    stack.destroy()
    assert not api.list_pipelines()
