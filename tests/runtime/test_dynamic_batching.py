"""A model version's `dynamic_batching_config` (Wallaroo's, set through `models/insert_model_config`)
drives the step's request merging on a REAL runtime: stored and answered as the SDK reads it,
refused by field when wrong, and at inference requests that reach an idle worker one after another
wait for each other up to the target, so each answer says it came in a batch of that size."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pyarrow as pa

from tests.runtime.conftest import X_SCHEMA, make_model
from tests.runtime.test_inference import infer_url

JSON = "application/json; format=pandas-records"
BATCH_ROWS = '''
return {"y": input_data["x"] * 10.0, "batch_rows": np.full(len(input_data["x"]), len(input_data["x"]), dtype=np.int64)}
'''


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/api/models/{path}", headers=server.headers, json=body, timeout=30)


def test_dynamic_batching_config_is_stored_checked_and_batches_requests(server, client, models_dir):
    mv = client.upload_model("dyn-batch", make_model(models_dir / "dyn", "dyn-batch", BATCH_ROWS), X_SCHEMA,
                             pa.schema([("y", pa.float64()), ("batch_rows", pa.int64())]))
    wrong = post(server, "insert_model_config", {"model_version_id": mv.id, "dynamic_batching_config": {
        "max_batch_delay_ms": 3000, "batch_size_target": 0}})
    assert wrong.status_code == 400 and wrong.json()["msg"].startswith(
        "dynamic_batching_config.batch_size_target: Input should be greater than 0"), wrong.text
    config = {"max_batch_delay_ms": 3000, "batch_size_target": 4}
    answer = post(server, "insert_model_config", {"model_version_id": mv.id, "dynamic_batching_config": config})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_config"]["dynamic_batching_config"] == {**config, "batch_size_limit": None}
    got = post(server, "get_model_version_by_id", {"model_version_id": mv.id}).json()
    assert got["model_version"]["config"]["dynamic_batching_config"] == {**config, "batch_size_limit": None}

    created = client.create_pipeline("dyn-pipe", steps=[mv])
    dep = client.deploy("dyn-pipe", pipeline_id=created.pipeline_id)
    client.wait_for_deployment(f"dyn-pipe-{dep}", timeout_s=60)
    url = infer_url(server, client, "dyn-pipe")

    def one(x: float) -> list[dict]:
        r = httpx.post(url, content=json.dumps([{"x": x}]), headers={**server.headers, "Content-Type": JSON}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:  # an idle worker: without the config the first would go alone
        answers = list(pool.map(one, [1.0, 2.0, 3.0, 4.0]))
    took = time.monotonic() - t0
    assert [a[0]["out"]["y"] for a in answers] == [10.0, 20.0, 30.0, 40.0]
    assert [a[0]["out"]["batch_rows"] for a in answers] == [4, 4, 4, 4]
    assert took < 2.5, f"the batch waited {took:.1f} s: it should go at its target, not at the 3 s delay"
