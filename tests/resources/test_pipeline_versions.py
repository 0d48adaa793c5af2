"""Two versions of one model in a canary split through the real engine, each with its own sidekick
settings keyed by its `WallarooModel` resource (D47): each running version reports its own env and
CPU count; a preview after `up` sees no change; changing one version's env restarts only that
version's sidekick; a new canary version takes the canary's settings; the env stays out of the
state in plaintext."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.byop import byop_source
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, plaintext_in_state

PROGRAM = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import DeploymentConfigBuilder, RandomSplit, WallarooModel, WallarooPipeline

cfg = pulumi.Config()
schema = dict(input_schema=pa.schema([("x", pa.float64())]),
              output_schema=pa.schema([("tag", pa.string()), ("cores", pa.float64()), ("pid", pa.float64())]))
stable = WallarooModel("stable", name="scorer", path=cfg.require("stable"), **schema)
canary = WallarooModel("canary", name="scorer", path=cfg.require("canary"), **schema)
deployment = (DeploymentConfigBuilder()
              .sidekick_cpus(stable, 0.5).sidekick_env(stable, {"TAG": cfg.require_secret("stable_tag")})
              .sidekick_cpus(canary, 2).sidekick_env(canary, {"TAG": cfg.require_secret("canary_tag")}).build())
pipeline = WallarooPipeline("pipe", name="versions-pipe", steps=[RandomSplit({stable: 50, canary: 50})],
                            deployment=deployment, deploy_timeout_s=90)
pulumi.export("stable_version", stable.version)
pulumi.export("canary_version", canary.version)
pulumi.export("status", pipeline.status)
"""

# what the running model reports: the TAG its sidekick was given, its CPU count, its process
REPORT = """
n = len(input_data["x"])
return {"tag": np.array([os.environ.get("TAG", "")] * n, dtype=object),
        "cores": np.full(n, float(len(os.sched_getaffinity(0)))),
        "pid": np.full(n, float(os.getpid()))}
"""


def write_report_model(folder: Path, marker: str) -> Path:
    """The REPORT model; `marker` (a comment) makes each folder a different model version."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(byop_source(REPORT) + f"\n# {marker}\n")
    return folder


def reports(api: WallarooClient, versions: dict[str, str]) -> dict[str, set[tuple[str, float, float]]]:
    """Per resource ('stable', 'canary'): the (tag, cores, pid) its rows were answered with."""
    api._deployment_ids.clear()
    out = api.infer("versions-pipe", pd.DataFrame({"x": [1.0] * 200}))
    by_version = {v: k for k, v in versions.items()}
    seen: dict[str, set[tuple[str, float, float]]] = {}
    for split, tag, cores, pid in zip(out["out._model_split"], out["out.tag"], out["out.cores"], out["out.pid"],
                                      strict=True):
        seen.setdefault(by_version[json.loads(split[0])["version"]], set()).add((tag, cores, pid))
    return seen


def test_two_versions_of_one_model_each_run_with_their_own_settings(
        stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("stable", str(write_report_model(tmp_path / "stable", "stable")))
    stack.config_set("canary", str(write_report_model(tmp_path / "canary", "canary")))
    stack.config_set("stable_tag", "stable-tag-0123", secret=True)
    stack.config_set("canary_tag", "canary-tag-4567", secret=True)
    stack.up()
    outs = stack.outputs()
    assert outs["status"] == "Running"
    versions = {"stable": outs["stable_version"], "canary": outs["canary_version"]}
    assert versions["stable"] != versions["canary"]
    cores = min(2.0, float(len(__import__("os").sched_getaffinity(0))))  # cpus 2: two cores where there are two
    first = reports(api, versions)  # 200 rows at 50:50: both versions serve (p of missing one ~ 2**-199)
    assert {k: {(t, c) for t, c, _ in v} for k, v in first.items()} == {
        "stable": {("stable-tag-0123", 1.0)}, "canary": {("canary-tag-4567", cores)}}
    assert stack.preview().change_summary == {"same": 4}  # the per-version keys read back as written
    assert not plaintext_in_state(stack, "stable-tag-0123", "canary-tag-4567")

    # only the canary's env changes: its sidekick restarts, the stable version's keeps running
    stack.config_set("canary_tag", "canary-tag-89ab", secret=True)
    assert changed(stack.preview()) == {"pipe": "update"}
    stack.up()
    second = reports(api, versions)
    assert {(t, c) for t, c, _ in second["canary"]} == {("canary-tag-89ab", cores)}
    assert {t for t, _, _ in second["stable"]} == {"stable-tag-0123"}
    assert {p for _, _, p in second["stable"]} == {p for _, _, p in first["stable"]}  # the same process
    assert not {p for _, _, p in second["canary"]} & {p for _, _, p in first["canary"]}  # a new one

    # a new canary version (new content, a new model version id): the preview plans it with the id
    # unknown, and the new version takes the canary's settings; the stable one still runs as it was
    write_report_model(tmp_path / "canary", "canary, second cut")
    assert changed(stack.preview())["pipe"] == "update"
    stack.up()
    versions["canary"] = stack.outputs()["canary_version"]
    third = reports(api, versions)
    assert {(t, c) for t, c, _ in third["canary"]} == {("canary-tag-89ab", cores)}
    assert {(t, c, p) for t, c, p in third["stable"]} == second["stable"]

    stack.destroy()
    assert not api.list_pipelines()
