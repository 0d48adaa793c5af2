"""Queue-depth autoscaling (the SDK's scale_up_queue_depth / scale_down_queue_depth /
autoscaling_window) on a REAL runtime, beside busy-time autoscaling: a step whose requests wait
more than scale_up_queue_depth per worker over the window grows, and shrinks once they stop."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pyarrow as pa

from tests.runtime.conftest import X_SCHEMA, make_model
from tests.runtime.test_inference import SLOW_BATCH, infer_url, replicas_gauge

JSON = "application/json; format=pandas-records"


def test_a_step_grows_on_its_queue_depth_and_shrinks_when_it_empties(server, client, models_dir):
    mv = client.upload_model("queue-scale", make_model(models_dir / "queue-scale", "queue-scale", SLOW_BATCH),
                             X_SCHEMA, pa.schema([("y", pa.float64()), ("batch_rows", pa.int64())]))
    created = client.create_pipeline("queue-pipe", steps=[mv])
    # the nested form, as DeploymentConfigBuilder().replica_autoscale_min_max(2, 1).scale_up_queue_depth(3)
    # .autoscaling_window(2) writes it; max_batch_rows 1: each request is its own batch, so requests queue
    wire = {"engine": {"autoscale": {"replica_min": 1, "replica_max": 2, "type": "queue", "scale_up_queue_depth": 3,
                                     "scale_down_queue_depth": 1, "autoscaling_window": 2}},
            "engineAux": {"images": {f"queue-scale-{mv.id}": {"max_batch_rows": 1}}}}
    dep = client.deploy("queue-pipe", pipeline_id=created.pipeline_id, engine_config=wire)
    client.wait_for_deployment(f"queue-pipe-{dep}", timeout_s=60)
    assert replicas_gauge(server, "queue-pipe", "queue-scale") == 1.0
    url = infer_url(server, client, "queue-pipe")
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            r = httpx.post(url, content=json.dumps([{"x": 1.0}]), headers={**server.headers, "Content-Type": JSON},
                           timeout=60)
            assert r.status_code == 200, r.text

    with ThreadPoolExecutor(6) as pool:  # 6 requests at a time on one worker: a depth of 6 >= 3
        clients = [pool.submit(load) for _ in range(6)]
        try:
            deadline = time.monotonic() + 30
            while replicas_gauge(server, "queue-pipe", "queue-scale") != 2.0 and time.monotonic() < deadline:
                time.sleep(0.25)
            assert replicas_gauge(server, "queue-pipe", "queue-scale") == 2.0, "the step did not grow on its queue"
        finally:
            done.set()
        for c in clients:
            c.result()  # no request failed while the pool grew
    deadline = time.monotonic() + 30  # idle: a depth of 0 < 1 over the 2 s window
    while replicas_gauge(server, "queue-pipe", "queue-scale") != 1.0 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert replicas_gauge(server, "queue-pipe", "queue-scale") == 1.0, "the step did not shrink once its queue emptied"
    client.undeploy("queue-pipe")
