"""Deploy + status, inference in both formats (docs' headers, curl), chained
steps, per-sidekick env isolation, crash restart, bad inputs, logs, metrics."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from tests.runtime.conftest import X_SCHEMA, Y_SCHEMA, make_model
from wallaroo_pulumi.client import DeploymentError, InferenceError, NotFoundError, ValidationError

JSON = "application/json; format=pandas-records"
ARROW = "application/vnd.apache.arrow.file"


def arrow_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def infer_url(server, client, name: str) -> str:
    p = client.get_pipeline(name)
    return f"{server.url}/v1/api/pipelines/infer/{name}-{p.deployment_id}/{name}"


def test_deploy_status_and_redacted_config(client, double_pipeline):
    p = client.get_pipeline(double_pipeline)
    assert p.deployed and p.status == "Running" and p.deployment_id is not None
    status = client.deployment_status(f"{double_pipeline}-{p.deployment_id}")
    assert status.status == "Running"
    assert status.engines and status.engine_lbs
    assert len(status.sidekicks) == 1
    sk = status.sidekicks[0]
    assert sk.status == "Running" and sk.pid and sk.restarts == 0
    with pytest.raises(NotFoundError):
        client.deployment_status(f"{double_pipeline}-{p.deployment_id + 100}")


def test_json_inference_with_the_docs_headers(server, client, double_pipeline):
    url = infer_url(server, client, double_pipeline)
    r = httpx.post(url, content=json.dumps([{"x": 1.5}, {"x": -2}]),
                   headers={"Authorization": f"Bearer {server.token}", "Content-Type": JSON})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    records = r.json()
    assert [rec["out"]["y"] for rec in records] == [3.0, -4.0]
    rec = records[0]
    assert rec["in"] == {"x": 1.5}
    assert rec["check_failures"] == [] and rec["anomaly"] == {"count": 0}
    assert isinstance(rec["time"], int) and abs(rec["time"] / 1000 - time.time()) < 60
    meta = rec["metadata"]
    last = json.loads(meta["last_model"])
    assert last["model_name"] == "double" and len(last["model_sha"]) == 64
    assert meta["pipeline_version"] == client.get_pipeline(double_pipeline).version
    assert meta["elapsed"] and all(isinstance(n, int) for n in meta["elapsed"])
    assert meta["dropped"] == [] and meta["partition"].startswith("engine-")


def test_arrow_inference_and_accept_negotiation(server, client, double_pipeline):
    url = infer_url(server, client, double_pipeline)
    body = arrow_bytes(pa.table({"x": pa.array([1.0, 2.0, 3.0])}))
    r = httpx.post(url, content=body, headers={**server.headers, "Content-Type": ARROW})
    assert r.status_code == 200 and r.headers["content-type"] == ARROW
    table = pa.ipc.open_file(pa.py_buffer(r.content)).read_all()
    assert table.column("out.y").to_pylist() == [2.0, 4.0, 6.0]
    assert table.column("in.x").to_pylist() == [1.0, 2.0, 3.0]
    for col in ("time", "anomaly.count", "metadata.last_model", "metadata.pipeline_version", "metadata.elapsed"):
        assert col in table.column_names
    # Arrow in, JSON out (Accept)
    r = httpx.post(url, content=body, headers={**server.headers, "Content-Type": ARROW, "Accept": JSON})
    assert r.json()[2]["out"]["y"] == 6.0
    # JSON in, Arrow out; int input cast to the float schema
    r = httpx.post(url, content=b'[{"x": 4}]', headers={**server.headers, "Content-Type": JSON, "Accept": ARROW})
    assert pa.ipc.open_file(pa.py_buffer(r.content)).read_all().column("out.y").to_pylist() == [8.0]
    # Arrow stream
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, X_SCHEMA) as w:
        w.write_table(pa.table({"x": [5.0]}))
    r = httpx.post(url, content=sink.getvalue(),
                   headers={**server.headers, "Content-Type": "application/vnd.apache.arrow.stream"})
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert pa.ipc.open_stream(pa.py_buffer(r.content)).read_all().column("out.y").to_pylist() == [10.0]
    # the other URL forms
    dep = client.get_pipeline(double_pipeline).deployment_id
    for alt in (f"/v1/api/pipelines/infer/{double_pipeline}-{dep}", f"/infer/{double_pipeline}"):
        r = httpx.post(server.url + alt, content=b'[{"x": 1}]', headers={**server.headers, "Content-Type": JSON})
        assert r.status_code == 200 and r.json()[0]["out"]["y"] == 2.0, alt


def test_client_infer_returns_the_same_type(client, double_pipeline, tmp_path):
    frame = client.infer(double_pipeline, pd.DataFrame({"x": [1.0, 2.0]}))
    assert isinstance(frame, pd.DataFrame)
    assert frame["out.y"].tolist() == [2.0, 4.0] and frame["in.x"].tolist() == [1.0, 2.0]
    assert "anomaly.count" in frame.columns and str(frame["time"].dtype).startswith("datetime64")
    table = client.infer(double_pipeline, pa.table({"x": [3.0]}))
    assert isinstance(table, pa.Table) and table.column("out.y").to_pylist() == [6.0]
    (tmp_path / "in.json").write_text('[{"x": 10}]')
    (tmp_path / "in.arrow").write_bytes(arrow_bytes(pa.table({"x": [11.0]})))
    assert client.infer_from_file(double_pipeline, tmp_path / "in.json")["out.y"].tolist() == [20.0]
    assert client.infer_from_file(double_pipeline, tmp_path / "in.arrow").column("out.y").to_pylist() == [22.0]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_inference_as_in_the_docs(server, client, double_pipeline, tmp_path):
    (tmp_path / "data.json").write_text('[{"x": 21}]')
    url = infer_url(server, client, double_pipeline)
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", url, "-H", f"Authorization: Bearer {server.token}",
         "-H", f"Content-Type: {JSON}", "--data-binary", f"@{tmp_path / 'data.json'}"],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(out.stdout)[0]["out"]["y"] == 42.0
    (tmp_path / "data.arrow").write_bytes(arrow_bytes(pa.table({"x": [0.5]})))
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", url, "-H", f"Authorization: Bearer {server.token}",
         "-H", f"Content-Type: {ARROW}", "-H", f"Accept: {ARROW}", "--data-binary", f"@{tmp_path / 'data.arrow'}",
         "-o", str(tmp_path / "out.arrow")],
        capture_output=True, text=True, check=True,
    )
    assert pa.ipc.open_file(str(tmp_path / "out.arrow")).read_all().column("out.y").to_pylist() == [1.0]


ENV_KEYS = ["A_SECRET", "B_SECRET", "WALLAROO_TEST_SERVER_ONLY_SECRET"]
ENV_A = f'''
seen = {{k: os.environ.get(k) for k in {ENV_KEYS!r}}}
return {{"a_env": np.array([json.dumps(seen)] * len(input_data["x"]))}}
'''
ENV_B = f'''
seen = {{k: os.environ.get(k) for k in {ENV_KEYS!r}}}
n = len(input_data["a_env"])
return {{"a_env": np.array([str(v) for v in input_data["a_env"]]), "b_env": np.array([json.dumps(seen)] * n)}}
'''


def test_chained_steps_with_isolated_env(client, models_dir):
    a = client.upload_model("env-a", make_model(models_dir / "ea", "env-a", ENV_A), X_SCHEMA,
                            pa.schema([("a_env", pa.string())]))
    b = client.upload_model("env-b", make_model(models_dir / "eb", "env-b", ENV_B), pa.schema([("a_env", pa.string())]),
                            pa.schema([("a_env", pa.string()), ("b_env", pa.string())]))
    created = client.create_pipeline("env-pipe", steps=[a, b])
    config = {"sidekicks": {"env-a": {"env": {"A_SECRET": "alpha-credential"}, "cpus": 0.5, "memory": "512Mi"},
                            "env-b": {"env": {"B_SECRET": "beta-credential"}}}}
    dep = client.deploy("env-pipe", pipeline_id=created.pipeline_id, engine_config=config)
    messages: list[str] = []
    assert client.wait_for_deployment(f"env-pipe-{dep}", timeout_s=60, progress=messages.append) == "Running"
    assert messages and messages[-1].startswith("Running")
    out = client.infer("env-pipe", pd.DataFrame({"x": [1.0, 2.0]}))
    seen_a = json.loads(out["out.a_env"][0])
    seen_b = json.loads(out["out.b_env"][0])
    assert seen_a == {"A_SECRET": "alpha-credential", "B_SECRET": None, "WALLAROO_TEST_SERVER_ONLY_SECRET": None}
    assert seen_b == {"A_SECRET": None, "B_SECRET": "beta-credential", "WALLAROO_TEST_SERVER_ONLY_SECRET": None}
    meta = json.loads(out["metadata.last_model"][0])
    assert meta["model_name"] == "env-b"
    assert len(out["metadata.elapsed"][0]) == 2  # one timing per step
    # credentials never come back from the API
    p = client.get_pipeline("env-pipe")
    assert p.engine_config["sidekicks"]["env-a"]["env"] == {"A_SECRET": "[secret]"}
    for text in (json.dumps(p.model_dump(mode="json")), json.dumps(client.deployment_status("env-pipe").model_dump())):
        assert "alpha-credential" not in text and "beta-credential" not in text


SLOW_BATCH = '''
__import__("time").sleep(0.15)
return {"y": input_data["x"] * 10.0, "batch_rows": np.full(len(input_data["x"]), len(input_data["x"]), dtype=np.int64)}
'''


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(server, client, models_dir):
    mv = client.upload_model("slow-batch", make_model(models_dir / "slow", "slow-batch", SLOW_BATCH), X_SCHEMA,
                             pa.schema([("y", pa.float64()), ("batch_rows", pa.int64())]))
    created = client.create_pipeline("merge-pipe", steps=[mv])
    dep = client.deploy("merge-pipe", pipeline_id=created.pipeline_id,
                        engine_config={"sidekicks": {"slow-batch": {"max_batch_rows": 6}}})
    client.wait_for_deployment(f"merge-pipe-{dep}", timeout_s=60)
    url = infer_url(server, client, "merge-pipe")
    before = len(client.logs("merge-pipe", limit=1000))

    def ask(i: int) -> tuple[int, httpx.Response]:
        body = json.dumps([{"x": float(i)}, {"x": float(i) + 0.5}] if i % 4 == 0 else [{"x": float(i)}])
        return i, httpx.post(url, content=body, headers={**server.headers, "Content-Type": JSON}, timeout=30)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(12)))
    sizes = []
    for i, r in answers:
        assert r.status_code == 200, r.text
        rows = r.json()
        expected_x = [float(i), float(i) + 0.5] if i % 4 == 0 else [float(i)]
        assert [row["in"]["x"] for row in rows] == expected_x
        assert [row["out"]["y"] for row in rows] == [x * 10 for x in expected_x]
        sizes.append(rows[0]["out"]["batch_rows"])
    assert max(sizes) > 1 and max(sizes) <= 6  # merged while busy, never past the step's limit
    logs = client.logs("merge-pipe", limit=1000)
    assert len(logs) - before == 15  # every request's rows logged once, as its own inference


def replicas_gauge(server, pipeline: str, step: str) -> float | None:
    text = httpx.get(server.url + "/metrics", headers=server.headers).text
    prefix = f'wallaroo_sidekick_replicas{{pipeline="{pipeline}",step="{step}"}} '
    return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), None)


def test_an_autoscaled_step_grows_under_steady_load(server, client, models_dir):
    """The deploy's autoscale config reaches the step's pool: steady load that keeps its one
    worker busy adds the second (3 s at or over the target), and not a third (the maximum)."""
    mv = client.upload_model("slow-scale", make_model(models_dir / "slow-scale", "slow-scale", SLOW_BATCH), X_SCHEMA,
                             pa.schema([("y", pa.float64()), ("batch_rows", pa.int64())]))
    created = client.create_pipeline("scale-pipe", steps=[mv])
    dep = client.deploy("scale-pipe", pipeline_id=created.pipeline_id,
                        engine_config={"autoscale_min": 1, "autoscale_max": 2, "autoscale_cpu_utilization": 50})
    client.wait_for_deployment(f"scale-pipe-{dep}", timeout_s=60)
    assert replicas_gauge(server, "scale-pipe", "slow-scale") == 1.0
    url = infer_url(server, client, "scale-pipe")
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            r = httpx.post(url, content=json.dumps([{"x": 1.0}]), headers={**server.headers, "Content-Type": JSON},
                           timeout=30)
            assert r.status_code == 200, r.text

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(load) for _ in range(4)]
        try:
            deadline = time.monotonic() + 30
            while replicas_gauge(server, "scale-pipe", "slow-scale") != 2.0 and time.monotonic() < deadline:
                time.sleep(0.25)
            assert replicas_gauge(server, "scale-pipe", "slow-scale") == 2.0, "the step did not grow under load"
            time.sleep(1.5)
            assert replicas_gauge(server, "scale-pipe", "slow-scale") == 2.0  # autoscale_max holds
        finally:
            done.set()
        for c in clients:
            c.result()  # no request failed while the pool grew
    status = client.deployment_status("scale-pipe")  # each worker is listed
    assert status.status == "Running" and len(status.sidekicks) == 2
    assert len({sk.pid for sk in status.sidekicks}) == 2 and all(sk.status == "Running" for sk in status.sidekicks)


CRASHY = '''
if float(input_data["x"][0]) == 13.0:
    os._exit(3)
return {"y": input_data["x"] + 1.0}
'''


def test_crashed_sidekick_is_a_5xx_naming_the_step_and_then_recovers(server, client, models_dir):
    mv = client.upload_model("crashy", make_model(models_dir / "crashy", "crashy", CRASHY), X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("crashy-pipe", steps=[mv])
    dep = client.deploy("crashy-pipe", pipeline_id=created.pipeline_id)
    client.wait_for_deployment(f"crashy-pipe-{dep}", timeout_s=60)
    assert client.infer("crashy-pipe", pd.DataFrame({"x": [1.0]}))["out.y"].tolist() == [2.0]
    r = httpx.post(infer_url(server, client, "crashy-pipe"), content=b'[{"x": 13}]',
                   headers={**server.headers, "Content-Type": JSON})
    assert r.status_code in (502, 503), r.text
    assert "crashy" in r.json()["error"] and r.json()["step"] == "crashy"
    with pytest.raises(InferenceError):
        client.infer("crashy-pipe", pd.DataFrame({"x": [13.0]}))
    deadline = time.monotonic() + 30
    while True:
        try:
            out = client.infer("crashy-pipe", pd.DataFrame({"x": [2.0]}))
            break
        except InferenceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert out["out.y"].tolist() == [3.0]
    status = client.deployment_status("crashy-pipe")
    assert status.sidekicks[0].restarts >= 1
    logs = client.logs("crashy-pipe", limit=100)
    errors = logs[logs["metadata.error"].notna()]
    assert len(errors) >= 2 and errors["metadata.step"].eq("crashy").all()


def test_bad_inputs_get_clear_errors(server, client, double_pipeline):
    url = infer_url(server, client, double_pipeline)
    H = {**server.headers, "Content-Type": JSON}

    def err(r, code):
        assert r.status_code == code, r.text
        body = r.json()
        assert body["status"] == "error" and body["code"] == code
        return body["error"]

    assert "malformed JSON" in err(httpx.post(url, content=b'[{"x": 1', headers=H), 400)
    assert "missing column 'x'" in err(httpx.post(url, content=b'[{"z": 1}]', headers=H), 400)
    msg = err(httpx.post(url, content=b'[{"x": "abc"}]', headers=H), 400)
    assert "column 'x'" in msg and "double" in msg and "str" in msg
    assert "empty" in err(httpx.post(url, content=b"", headers=H), 400)
    assert "empty" in err(httpx.post(url, content=b"[]", headers=H), 400)
    assert "list of objects" in err(httpx.post(url, content=b'{"x": [1]}', headers=H), 400)
    A = {**server.headers, "Content-Type": ARROW}
    assert "malformed Arrow" in err(httpx.post(url, content=b"not arrow at all", headers=A), 400)
    msg = err(httpx.post(url, content=arrow_bytes(pa.table({"x": ["a"]})), headers=A), 400)
    assert "column 'x'" in msg and "double" in msg
    assert "missing column 'x'" in err(httpx.post(url, content=arrow_bytes(pa.table({"q": [1.0]})), headers=A), 400)
    assert "Content-Type" in err(httpx.post(url, content=b"x=1", headers={**server.headers, "Content-Type": "text/plain"}), 415)
    big = b"[" + b'{"x": 1.0},' * 110_000 + b'{"x": 1.0}]'  # > the 1 MiB request limit
    assert "max_request_bytes" in err(httpx.post(url, content=big, headers=H), 413)
    infer = f"{server.url}/v1/api/pipelines/infer"
    assert "no pipeline named 'nope'" in err(httpx.post(f"{infer}/nope-1/nope", content=b'[{"x":1}]', headers=H), 404)
    dep = client.get_pipeline(double_pipeline).deployment_id
    msg = err(httpx.post(f"{infer}/{double_pipeline}-{dep + 50}/{double_pipeline}", content=b'[{"x":1}]', headers=H), 404)
    assert f"{double_pipeline}-{dep}" in msg
    assert err(httpx.post(url, content=b'[{"x":1}]', headers={"Content-Type": JSON, "Authorization": "Bearer bad"}), 401)
    # failed inferences are logged too
    logs = client.logs(double_pipeline, limit=200)
    assert logs["metadata.error"].fillna("").str.contains("malformed JSON").any()


def test_get_logs_pages_formats_and_time_range(server, client, double_pipeline):
    for i in range(5):
        client.infer(double_pipeline, pd.DataFrame({"x": [100.0 + i]}))
    H = {**server.headers}
    body = {"pipeline_name": double_pipeline, "workspace_id": 1, "order": "Desc", "page_size": 2}
    r = httpx.post(server.url + "/v1/api/pipelines/get_logs", json=body, headers=H)
    assert r.status_code == 200 and r.headers["x-iteration-status"] == "RecordLimited"
    page1 = r.json()
    assert [rec["in"]["x"] for rec in page1] == [104.0, 103.0]
    cursor = r.headers["x-iteration-cursor"]
    r = httpx.post(server.url + "/v1/api/pipelines/get_logs", json={**body, "cursor": cursor},
                   headers={**H, "Accept": ARROW})
    assert r.headers["content-type"] == ARROW
    page2 = pa.ipc.open_file(pa.py_buffer(r.content)).read_all()
    assert page2.column("in.x").to_pylist() == [102.0, 101.0]
    now = datetime.now(UTC)
    window = {"start_time": (now - timedelta(minutes=5)).isoformat(), "end_time": (now + timedelta(minutes=1)).isoformat()}
    r = httpx.post(server.url + "/v1/api/pipelines/get_logs", json={**body, **window, "page_size": 1000, "order": "Asc"}, headers=H)
    assert r.headers["x-iteration-status"] == "All" and "x-iteration-cursor" not in r.headers
    assert len(r.json()) >= 5
    future = {"start_time": (now + timedelta(hours=1)).isoformat(), "end_time": (now + timedelta(hours=2)).isoformat()}
    r = httpx.post(server.url + "/v1/api/pipelines/get_logs", json={**body, **future}, headers=H)
    assert r.json() == []
    r = httpx.post(server.url + "/v1/api/pipelines/get_logs", json={**body, "start_time": now.isoformat()}, headers=H)
    assert r.status_code == 400 and "end_time" in r.json()["error"]
    r = httpx.post(server.url + "/v1/api/pipelines/get_logs", json={**body, "order": "Sideways"}, headers=H)
    assert r.status_code == 400 and "order" in r.json()["error"]
    frame = client.logs(double_pipeline, limit=3, order="Asc")
    assert len(frame) == 3 and "out.y" in frame.columns
    r = httpx.post(server.url + "/v1/api/pipelines/get_logs", json={**body, "pipeline_name": "no-such"}, headers=H)
    assert r.status_code == 404


def test_metrics_have_pipeline_and_step_latency(server, client, double_pipeline):
    client.infer(double_pipeline, pd.DataFrame({"x": [1.0]}))
    text = httpx.get(server.url + "/metrics", headers=server.headers).text
    assert f'wallaroo_inference_duration_seconds_count{{pipeline="{double_pipeline}"}}' in text
    assert f'wallaroo_step_duration_seconds_count{{pipeline="{double_pipeline}",step="double"}}' in text
    assert f'wallaroo_sidekick_replicas{{pipeline="{double_pipeline}",step="double"}} 1.0' in text
    assert "wallaroo_http_requests_total" in text and "wallaroo_sidekick_restarts" in text


BROKEN_LOAD = 'raise RuntimeError("cannot open weights.bin: checksum mismatch")'


def test_failed_deploy_reports_the_sidekicks_load_error(client, models_dir):
    mv = client.upload_model("broken", make_model(models_dir / "broken", "broken", 'return {"y": input_data["x"]}',
                                                  load_body=BROKEN_LOAD), X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("broken-pipe", steps=[mv])
    dep = client.deploy("broken-pipe", pipeline_id=created.pipeline_id)
    with pytest.raises(DeploymentError) as err:
        client.wait_for_deployment(f"broken-pipe-{dep}", timeout_s=60)
    assert "checksum mismatch" in str(err.value)
    p = client.get_pipeline("broken-pipe")
    assert p.status == "Error" and "checksum mismatch" in (p.reason or "")
    status = client.deployment_status(f"broken-pipe-{dep}")
    assert status.status == "Error" and any("checksum mismatch" in (s.reason or "") for s in status.sidekicks)
    with pytest.raises(InferenceError) as ierr:
        client.infer("broken-pipe", pd.DataFrame({"x": [1.0]}))
    assert ierr.value.status_code == 503
    client.undeploy("broken-pipe")  # the runtime is shared: later health gates judge what is deployed


def test_bad_engine_config_is_400_naming_the_field(client, double_pipeline):
    with pytest.raises(ValidationError) as err:
        client.deploy(double_pipeline, engine_config={"sidekicks": {"double": {"memory": "lots"}}})
    assert "engine_config.sidekicks.double.memory" in str(err.value)
    with pytest.raises(ValidationError) as err:
        client.deploy(double_pipeline, engine_config={"replica_count": 3, "autoscale_max": 2})
    assert "replica_count" in str(err.value)
    with pytest.raises(ValidationError) as err:
        client.deploy(double_pipeline, engine_config={"sidekicks": {"other-model": {"cpus": 1}}})
    assert "other-model" in str(err.value)
    with pytest.raises(ValidationError) as err:
        client.deploy(double_pipeline, engine_config={"cpuz": 1})
    assert "engine_config.cpuz" in str(err.value)


def http_count(server, method: str, route: str, code: int) -> float:
    """wallaroo_http_requests_total of one (method, route, code), 0 when absent."""
    wanted = f'wallaroo_http_requests_total{{code="{code}",method="{method}",route="{route}"}} '
    text = httpx.get(server.url + "/metrics", headers=server.headers).text
    return next((float(line[len(wanted):]) for line in text.splitlines() if line.startswith(wanted)), 0.0)


def test_inference_urls_are_checked_and_counted_as_every_route(server, client, double_pipeline):
    """The inference front (D46) answers the three inference URLs itself: counted under their route
    templates, refused with the runtime's error body before the body is read; what is not exactly
    an inference POST goes on to the app."""
    dep = client.get_pipeline(double_pipeline).deployment_id
    long_, short, edge = ("/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}", "/v1/api/pipelines/infer/{deploy_name}",
                          "/infer/{pipeline_name}")
    urls = {long_: f"/v1/api/pipelines/infer/{double_pipeline}-{dep}/{double_pipeline}",
            short: f"/v1/api/pipelines/infer/{double_pipeline}-{dep}", edge: f"/infer/{double_pipeline}"}
    headers = {**server.headers, "Content-Type": JSON}
    before = {route: http_count(server, "POST", route, 200) for route in urls}
    for url in urls.values():
        r = httpx.post(server.url + url, content=json.dumps([{"x": 2.0}]), headers=headers)
        assert r.status_code == 200 and r.json()[0]["out"]["y"] == 4.0, r.text
        assert "step;desc=" in r.headers["server-timing"]
    assert {route: http_count(server, "POST", route, 200) - n for route, n in before.items()} == dict.fromkeys(urls, 1.0)

    unmatched = http_count(server, "POST", "unmatched", 401)
    r = httpx.post(server.url + urls[long_], content=b"[]", headers={**headers, "Authorization": "Bearer wlr_nope"})
    assert r.status_code == 401 and r.json()["code"] == 401 and "invalid token" in r.json()["msg"]
    assert http_count(server, "POST", "unmatched", 401) == unmatched + 1

    mismatch = http_count(server, "POST", long_, 404)
    r = httpx.post(server.url + f"/v1/api/pipelines/infer/{double_pipeline}-{dep}/other", content=b"[]", headers=headers)
    assert r.status_code == 404 and "inference URL mismatch" in r.json()["msg"]
    assert http_count(server, "POST", long_, 404) == mismatch + 1

    r = httpx.get(server.url + urls[long_], headers=server.headers)  # not a POST: the app's 405, its error body
    assert r.status_code == 405 and r.json()["code"] == 405
