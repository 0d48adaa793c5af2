"""Two versions of one model in a published split keep their own sidekick settings on the edge
(D47): the publish keys them '<name>-<model version id>' as the SDK does, the edge registers the
versions under ids of its own and each still runs with its own env and CPU count."""

from __future__ import annotations

import json
from pathlib import Path

from tests.publish.conftest import EdgeBox, centre_env, extract_publish_dir
from tests.publish.publish_helpers import post, wait_published
from tests.runtime.conftest import X_SCHEMA, Y_SCHEMA, Server, make_model
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer

MODEL, PIPELINE = "edge-versions-model", "edge-versions"
# what the running model reports: 10 x its cores, +1 if it was given EDGE_A, +2 if EDGE_B
REPORT = ('return {"y": input_data["x"] * 10 * len(os.sched_getaffinity(0))'
          ' + ("EDGE_A" in os.environ) + 2 * ("EDGE_B" in os.environ)}')


def image(cpu: float, env: str) -> dict:
    amounts = {"cpu": cpu, "memory": "512Mi"}
    return {"resources": {"limits": amounts, "requests": amounts}, "env": [{"name": env, "value": "at-the-centre"}]}


def test_each_published_version_runs_with_its_own_settings_on_the_edge(centre: Server, registry: RegistryServer,
                                                                      tmp_path: Path) -> None:
    with centre.client() as client:
        # another model first: the centre's version ids differ from those the edge gives (it registers only these)
        client.upload_model("other", make_model(tmp_path / "other", "other", REPORT), X_SCHEMA, Y_SCHEMA)
        v1 = client.upload_model(MODEL, make_model(tmp_path / "v1", MODEL, REPORT + "  # v1"), X_SCHEMA, Y_SCHEMA)
        v2 = client.upload_model(MODEL, make_model(tmp_path / "v2", MODEL, REPORT + "  # v2"), X_SCHEMA, Y_SCHEMA)
        refs = [{"name": MODEL, "version": v.version, "sha": v.sha} for v in (v1, v2)]
        created = client.create_pipeline(PIPELINE, steps=[{"RandomSplit": {"weights": [
            {"model": refs[0], "weight": 1}, {"model": refs[1], "weight": 1}]}}])
    config = {"engine": {"cpu": 1}, "engineAux": {"images": {f"{MODEL}-{v1.id}": image(0.5, "EDGE_A"),
                                                             f"{MODEL}-{v2.id}": image(2, "EDGE_B")}}}
    started = post(centre, "/pipelines/publish", {"pipeline_version_id": created.pipeline_version_pk_id,
                                                  "model_config_ids": [v1.id, v2.id], "engine_config": config},
                   status=202)
    done = wait_published(centre, started["id"])
    assert done["status"] == "Published", done["error"]
    assert set(done["engine_config"]["engineAux"]["images"]) == {f"{MODEL}-{v1.id}", f"{MODEL}-{v2.id}"}
    added = post(centre, "/pipelines/add_edge_to_publish", {"name": "shop-v", "pipeline_publish_id": done["id"]},
                 status=201)
    env = {**centre_env(registry), "EDGE_BUNDLE": added["edge_bundles"]["shop-v"], "EDGE_A": "a", "EDGE_B": "b"}
    for key in ("WALLAROO_OCI_USERNAME", "WALLAROO_OCI_PASSWORD"):
        env.pop(key)
    box = EdgeBox(tmp_path / "shop-v-persist", extract_publish_dir(registry, done["pipeline_url"], tmp_path / "image"),
                  env).start()
    try:
        answers = box.infer(PIPELINE, [1.0] * 100)
    finally:
        box.stop()
    seen = {(json.loads(a["out"]["_model_split"][0])["sha"], a["out"]["y"]) for a in answers}  # versions: the edge's
    cores = min(2, len(__import__("os").sched_getaffinity(0)))  # cpus 2: two cores where there are two
    assert seen == {(v1.sha, 10.0 + 1), (v2.sha, 10.0 * cores + 2)}
