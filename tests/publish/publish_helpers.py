"""Calls the publish tests share: the MLOps API by hand (httpx), a pipeline to publish, a publish waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, Server, make_model
from wallaroo_pulumi.testing.waiting import wait_until

SECRET = "sk-edge-credential-never-in-the-image"


def post(srv: Server, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    answer = httpx.post(f"{srv.url}/v1/api{path}", json=body, headers=srv.headers, timeout=60)
    assert answer.status_code == status, answer.text
    return answer.json()


def wait_published(srv: Server, publish_id: int, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = post(srv, "/pipelines/get_publish_status", {"id": publish_id})
        if status["status"] in ("Published", "Error"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"publish {publish_id} still {status['status']}:\n{srv.log_tail()}")


def make_pipeline(srv: Server, tmp: Path, name: str = "edge-double", body: str = DOUBLE,
                  schemas: tuple[pa.Schema, pa.Schema] = (X_SCHEMA, Y_SCHEMA)) -> tuple[int, int]:
    """A one-step pipeline; (its version's pk id, the model version id)."""
    with srv.client() as client:
        mv = client.upload_model(f"{name}-model", make_model(tmp, f"{name}-model", body), *schemas)
        created = client.create_pipeline(name, steps=[mv])
    return created.pipeline_version_pk_id, mv.id


def publish(srv: Server, version_id: int, model_id: int, replaces: list[int] | None = None,
            pipeline: str = "edge-double") -> dict[str, Any]:
    """Published with a step credential (EDGE_TEST_CREDENTIAL) the image must not hold."""
    config = {"engine": {"cpu": 1}, "engineAux": {"images": {f"{pipeline}-model-{model_id}": {
        "resources": {"limits": {"cpu": 1, "memory": "512Mi"}, "requests": {"cpu": 1, "memory": "512Mi"}},
        "env": [{"name": "EDGE_TEST_CREDENTIAL", "value": SECRET}]}}}}
    started = post(srv, "/pipelines/publish", {"pipeline_version_id": version_id, "model_config_ids": [model_id],
                                               "engine_config": config, "replaces": replaces or []}, status=202)
    assert started["status"] in ("PendingPublish", "Publishing", "Published")
    done = wait_published(srv, started["id"])
    assert done["status"] == "Published", done["error"]
    return done


# y = x * the factor the edge gives as its credential (the centre never had it: its value is not in the image)
FACTOR = 'return {"y": input_data["x"] * float(os.environ["EDGE_TEST_CREDENTIAL"])}'
PIPELINE = "edge-double"


def wait(what: str, check: Callable[[], Any], timeout_s: float = 60, on_fail: Callable[[], str] = lambda: "") -> Any:
    """`check()`'s first result that is neither None, False nor 0 (an empty frame or list counts)."""

    def done() -> tuple[Any] | None:
        result = check()
        return None if result is None or result is False or (isinstance(result, int) and result == 0) else (result,)

    return wait_until(done, timeout_s, what, interval=0.25, detail=on_fail)[0]


def centre_rows(centre: Server, pipeline: str = PIPELINE) -> pd.DataFrame:
    with centre.client() as client:
        return client.logs(pipeline, limit=1000, order="Asc")
