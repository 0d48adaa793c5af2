"""An edge box (`runtime edge` on the published layer's files) against a real centre: it joins once,
serves the pipeline with the centre stopped (its step credential from its own environment), and when
the centre is back its rows reach the centre's logs exactly once, tagged with the edge's name and with
the edge's timestamps; over its local bound it drops the oldest rows and says how many; a removed
edge can no longer ship; a reused join token stops a second box; `replaces` upgrades an edge."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from tests.publish.conftest import EdgeBox, centre_args, centre_env, extract_publish_dir
from tests.publish.publish_helpers import FACTOR, PIPELINE, centre_rows, make_pipeline, post, publish, wait
from tests.runtime.conftest import X_SCHEMA, Y_SCHEMA, Server
from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.runtime.services.publish.bundle import decode_bundle
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer


@pytest.fixture
def stopped_centre(tmp_path: Path, registry: RegistryServer, base_image: str) -> Iterator[Server]:
    """A centre on a fixed port, so that it can be stopped and started again at the address the bundle names."""
    srv = Server(tmp_path / "centre", [*centre_args(registry, base_image), "--port", str(free_port())],
                 centre_env(registry)).start()
    yield srv
    srv.stop()


def published_edge(centre: Server, registry: RegistryServer, tmp: Path, name: str, *args: str, pipeline: str = PIPELINE,
                   body: str = FACTOR, schemas: tuple = (X_SCHEMA, Y_SCHEMA)) -> tuple[EdgeBox, dict]:
    version_id, model_id = make_pipeline(centre, tmp, pipeline, body, schemas)
    done = publish(centre, version_id, model_id, pipeline=pipeline)
    added = post(centre, "/pipelines/add_edge_to_publish", {"name": name, "pipeline_publish_id": done["id"]}, status=201)
    publish_dir = extract_publish_dir(registry, done["pipeline_url"], tmp / f"image-{done['id']}")
    env = {**centre_env(registry), "EDGE_BUNDLE": added["edge_bundles"][name], "EDGE_TEST_CREDENTIAL": "3"}
    for key in ("WALLAROO_OCI_USERNAME", "WALLAROO_OCI_PASSWORD"):  # an edge box has no registry credentials
        env.pop(key)
    return EdgeBox(tmp / f"{name}-persist", publish_dir, env, ["--ship-interval", "1s", *args]), done


def test_an_edge_serves_offline_and_its_rows_reach_the_centre_once(stopped_centre: Server, registry: RegistryServer,
                                                                   tmp_path: Path) -> None:
    centre = stopped_centre
    box, done = published_edge(centre, registry, tmp_path, "shop-1")
    box.start()
    try:
        assert box.health()["edge"]["joined"] is True
        centre.stop()
        answers = [row for xs in ([1.0, 2.0], [5.0]) for row in box.infer(PIPELINE, xs)]
        assert [a["out"]["y"] for a in answers] == [3.0, 6.0, 15.0]  # the factor from the edge's own environment
        wait("the edge to notice the centre is gone", lambda: box.health()["edge"]["centre_reachable"] is False)
        assert box.health()["edge"]["shipped_rows"] == 0

        centre.start()
        rows = wait("the edge's rows at the centre", lambda: (lambda f: f if len(f) >= 3 else None)(centre_rows(centre)),
                    on_fail=box.log_tail)
        time.sleep(3)  # more ship rounds: nothing is sent twice
        rows = centre_rows(centre)
        assert sorted(rows["in.x"].tolist()) == [1.0, 2.0, 5.0] and sorted(rows["out.y"].tolist()) == [3.0, 6.0, 15.0]
        assert set(rows["metadata.partition"]) == {"shop-1"}
        assert set(rows["metadata.pipeline_version"]) == {done["pipeline_version_name"]}
        edge_times = sorted(pd.to_datetime(a["time"], unit="ms", utc=True) for a in answers)
        assert sorted(pd.to_datetime(rows["time"], utc=True).tolist()) == edge_times  # the edge's own timestamps
        [edge] = post(centre, "/pipelines/list_edges_by_publish_id", {"publish_id": done["id"]})["edges"]
        assert (edge["shipped_rows"], edge["dropped_rows"]) == (3, 0)
        assert box.health()["edge"]["shipped_rows"] == 3

        # restarted with its volume: no second join, it serves and ships on
        box.stop()
        box.start()
        box.infer(PIPELINE, [7.0])
        wait("the row after the restart", lambda: len(centre_rows(centre)) == 4, on_fail=box.log_tail)

        # a second box with the same bundle but a fresh volume: the join token was used
        second = EdgeBox(tmp_path / "second-persist", box.publish_dir, box.env, box.args)
        proc = second.launch()
        assert proc.wait(120) != 0
        assert "already used" in second.log_tail() and "works once" in second.log_tail()

        # removed at the centre: it serves on, but its logs are no longer taken
        post(centre, "/pipelines/remove_edge", {"name": "shop-1"})
        box.infer(PIPELINE, [9.0])
        health = wait("the edge to be refused", lambda: (lambda h: h if h["edge"]["error"] else None)(box.health()))
        assert "no longer accepts" in health["edge"]["error"]
        assert len(centre_rows(centre)) == 4
    finally:
        box.stop()


def test_an_edge_over_its_bound_drops_the_oldest_rows_and_says_how_many(
        stopped_centre: Server, registry: RegistryServer, tmp_path: Path) -> None:
    centre = stopped_centre
    box, done = published_edge(centre, registry, tmp_path, "shop-2", "--local-inference-storage", "10Ki")
    box.start()
    try:
        centre.stop()
        for i in range(6):  # one sealed segment each (a ship round between them)
            box.infer(PIPELINE, [float(i)])
            time.sleep(1.5)
        dropped = wait("rows dropped", lambda: box.health()["edge"]["dropped_rows"])
        assert "inference log rows dropped" in box.log_tail()

        centre.start()
        rows = wait("the kept rows at the centre", lambda: (lambda f: f if len(f) + dropped >= 6 else None)(
            centre_rows(centre)), on_fail=box.log_tail)
        kept = sorted(rows["in.x"].tolist())
        assert len(kept) + dropped == 6 and 0 < dropped < 6
        assert kept == [float(i) for i in range(dropped, 6)]  # the oldest went
        [edge] = post(centre, "/pipelines/list_edges_by_publish_id", {"publish_id": done["id"]})["edges"]
        assert edge["dropped_rows"] == dropped
    finally:
        box.stop()


def test_replaces_gives_each_edge_its_upgrade_bundle(centre: Server, registry: RegistryServer, tmp_path: Path) -> None:
    box, first = published_edge(centre, registry, tmp_path, "shop-3")
    box.start()
    try:
        assert box.infer(PIPELINE, [1.0])[0]["out"]["y"] == 3.0
        version_id, model_id = make_pipeline(centre, tmp_path / "v2", PIPELINE,
                                             'return {"y": input_data["x"] * float(os.environ["EDGE_TEST_CREDENTIAL"]) + 100}')
        second = publish(centre, version_id, model_id, replaces=[first["id"]])
        assert second["replaces"] == [{"id": first["id"], "pipeline_name": PIPELINE,
                                       "pipeline_version_name": first["pipeline_version_name"]}]
        status = post(centre, "/pipelines/get_publish_status", {"id": second["id"], "include_replace_bundles": True})
        bundle = decode_bundle(status["edge_bundles"]["shop-3"])
        assert bundle.pipeline_url == second["pipeline_url"] != first["pipeline_url"]
        assert post(centre, "/pipelines/list_edges_by_publish_id", {"publish_id": first["id"]})["edges"] == []

        # the upgrade: the new image's files, the new bundle, the same volume
        box.stop()
        box.publish_dir = extract_publish_dir(registry, second["pipeline_url"], tmp_path / "image-v2")
        box.env = {**box.env, "EDGE_BUNDLE": status["edge_bundles"]["shop-3"]}
        box.start()
        assert box.infer(PIPELINE, [1.0])[0]["out"]["y"] == 103.0
        rows = wait("both versions' rows", lambda: (lambda f: f if len(f) >= 2 else None)(centre_rows(centre)),
                    on_fail=box.log_tail)
        assert sorted(rows["out.y"].tolist()) == [3.0, 103.0]
        assert set(rows["metadata.pipeline_version"]) == {first["pipeline_version_name"], second["pipeline_version_name"]}
    finally:
        box.stop()


def test_an_edge_without_a_step_credential_stops_naming_it(centre: Server, registry: RegistryServer,
                                                             tmp_path: Path) -> None:
    box, _ = published_edge(centre, registry, tmp_path, "shop-4")
    box.env = {k: v for k, v in box.env.items() if k != "EDGE_TEST_CREDENTIAL"}
    proc = box.launch()
    assert proc.wait(120) != 0
    assert "EDGE_TEST_CREDENTIAL (model edge-double-model)" in box.log_tail(), box.log_tail()
    assert "-e NAME=value" in box.log_tail()
    box.env["EDGE_TEST_CREDENTIAL"] = "3"  # given: the same volume starts (joined already) and serves
    box.start()
    try:
        assert box.infer(PIPELINE, [2.0])[0]["out"]["y"] == 6.0
    finally:
        box.stop()


# an LLM's stand-in: its answer is the prompt, so the listener's scores are the prompts'
ECHO_LLM = 'return {"generated_text": np.array([t + os.environ["EDGE_TEST_CREDENTIAL"] for t in input_data["text"]], dtype=object)}'
TEXT = (pa.schema([("text", pa.string())]), pa.schema([("generated_text", pa.string())]))


def test_a_listener_run_at_the_centre_scores_the_edges_answers(stopped_centre: Server, registry: RegistryServer,
                                                                 tmp_path: Path) -> None:
    centre = stopped_centre
    box, _ = published_edge(centre, registry, tmp_path, "shop-5", pipeline="edge-llm", body=ECHO_LLM, schemas=TEXT)
    box.start()
    try:
        centre.stop()
        answer = httpx.post(f"{box.url}/infer/edge-llm", timeout=60, content=json.dumps(
            [{"text": t} for t in ("Thank you, this was wonderful! ", "You stupid worthless idiot, shut up. ")]),
            headers={"Authorization": f"Bearer {box.token}", "Content-Type": "application/json; format=pandas-records"})
        assert answer.status_code == 200, answer.text
        centre.start()
        wait("the edge's rows at the centre", lambda: len(centre_rows(centre, "edge-llm")) == 2 or None,
             on_fail=box.log_tail)
    finally:
        box.stop()
    task = post(centre, "/task/run_once", {"name": "edge-scores", "workspace_id": 1, "json": {
        "monitored_pipeline": "edge-llm", "listener_model": {"name": "combined"}}}, status=201)
    run = wait("the listener run", lambda: (lambda runs: runs[0] if runs and runs[0]["status"] != "running" else None)(
        post(centre, "/task/list_task_runs", {"task_id": task["id"]})), timeout_s=180, on_fail=centre.log_tail)
    assert run["status"] == "success" and run["rows_scored"] == 2, run
    [result] = post(centre, "/listeners/results", {"pipeline": "edge-llm", "listener": "combined"})["results"]
    records = {r["in"]["text"]: r for r in result["records"]}
    assert {r["metadata"]["partition"] for r in records.values()} == {"shop-5"}  # scored as the edge's answers
    assert records["You stupid worthless idiot, shut up. 3"]["out"]["toxicity"] > 0.5
    assert records["Thank you, this was wonderful! 3"]["out"]["toxicity"] < 0.5
