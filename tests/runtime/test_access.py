"""API keys over the whole API, on a REAL runtime (loopback): every route has an access rule; an
expired, revoked or unknown key gets 401 everywhere; a key without the right gets 403 naming what
it lacks; an inference-only key infers and does nothing else; a deployer reaches its own
workspace only; the keys API itself (secret shown once, only hashes stored)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import count
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, Server, make_model, server_env
from wallaroo_pulumi.client import (
    AuthError,
    ConflictError,
    ModelVersion,
    NotFoundError,
    ValidationError,
    WallarooClient,
    schema_to_b64,
)
from wallaroo_pulumi.testing.byop import byop_source

pytestmark = pytest.mark.security

JSON = "application/json; format=pandas-records"
PY = "3.9"  # a python_version every version of the upload API accepts


@dataclass
class World:
    server: Server
    admin: WallarooClient
    ws2: int
    model_id: int
    version_id: int
    pipeline_id: int
    deployment: str
    task_id: str
    run_id: str
    root: Path
    model: ModelVersion
    orch_id: str = ""  # an uploaded orchestration of workspace 1 (main.py sleeps: its continuous tasks stay up)
    keys: dict[str, str] = field(default_factory=dict)  # name -> secret
    key_ids: dict[str, int] = field(default_factory=dict)
    serial: count = field(default_factory=count)

    def unique(self, what: str) -> str:
        return f"acc-{what}-{next(self.serial)}"

    # Throwaway targets for the calls that are expected to succeed and change something, so that
    # what every other call names (workspace 1's acc-double, acc-pipe, its task, the key 'web') stays.
    def new_key(self) -> int:
        return self.admin.create_key(self.unique("key"), "inference", pipelines=["acc-pipe"]).key.id

    def new_model(self) -> str:
        name = self.unique("model")
        self.admin.upload_model(name, make_model(self.root, name, DOUBLE), X_SCHEMA, Y_SCHEMA, python_version=PY)
        return name

    def new_pipeline(self, deployed: bool = False) -> tuple[str, int]:
        name = self.unique("pipe")
        pipeline_id = self.admin.create_pipeline(name, steps=[self.model]).pipeline_id
        if deployed:
            self.admin.deploy(name, pipeline_id=pipeline_id, engine_config={"replica_count": 1})
        return name, pipeline_id

    def new_orchestration(self) -> str:
        return self.admin.upload_orchestration(orchestration_zip(), "o.zip", name=self.unique("orch")).id

    def new_task(self, schedule: str | None = None) -> str:
        listener = {"monitored_pipeline": "acc-pipe", "listener_model": {"name": "acc-double"}, "window_seconds": 60}
        return self.admin.create_task(self.unique("task"), listener, schedule=schedule).id


def wait_running(srv: Server, deployment: str, workspace_id: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.post(srv.url + "/v1/api/status/get_deployment", json={"name": deployment, "workspace_id": workspace_id},
                       headers=srv.headers)
        if r.status_code == 200 and r.json()["status"] == "Running":
            return
        time.sleep(0.25)
    raise AssertionError(f"{deployment} not Running: {r.text}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("access")
    srv = Server(root / "data", [], server_env()).start()
    admin = srv.client()
    try:
        ws2 = admin.create_workspace("second").id
        mv = admin.upload_model("acc-double", make_model(root, "acc-double", DOUBLE), X_SCHEMA, Y_SCHEMA, python_version=PY)
        pipe = admin.create_pipeline("acc-pipe", steps=[mv])
        dep = admin.deploy("acc-pipe", pipeline_id=pipe.pipeline_id, engine_config={"replica_count": 1})
        mv2 = admin.upload_model("acc-two", make_model(root, "acc-two", DOUBLE), X_SCHEMA, Y_SCHEMA,
                                 python_version=PY, workspace_id=ws2)
        pipe2 = admin.create_pipeline("acc-two-pipe", steps=[mv2], workspace_id=ws2)
        dep2 = admin.deploy("acc-two-pipe", pipeline_id=pipe2.pipeline_id, engine_config={"replica_count": 1})
        admin.wait_for_deployment(f"acc-pipe-{dep}", timeout_s=120)
        wait_running(srv, f"acc-two-pipe-{dep2}", ws2)  # the client's wait looks in workspace 1 only
        admin.infer("acc-pipe", pd.DataFrame({"x": [1.0]}))  # logs to read, score and assay
        task = admin.create_task("acc-task", {"monitored_pipeline": "acc-pipe", "listener_model": {"name": "acc-double"},
                                              "window_seconds": 60}, timeout_s=60)
        run = admin.wait_for_run(task.id, timeout_s=120)
        w = World(srv, admin, ws2, mv.model_id, mv.id, pipe.pipeline_id, f"acc-pipe-{dep}", task.id, run.id, root, mv)
        w.orch_id = admin.wait_for_orchestration(w.new_orchestration()).id
        soon = datetime.now(UTC) + timedelta(seconds=2)
        for name, role, extra in (
            ("admin-two", "admin", {}),
            ("dep-one", "deployer", {"workspace_id": 1}),
            ("dep-two", "deployer", {"workspace_id": ws2}),
            ("web", "inference", {"pipelines": ["acc-pipe"]}),
            ("web-logs", "inference", {"pipelines": ["acc-pipe"], "read_logs": True}),
            ("ws2-infer", "inference", {"workspace_id": ws2}),
            ("revoked", "admin", {}),
            ("expired", "admin", {"expires_at": soon}),
        ):
            created = admin.create_key(name, role, **extra)
            w.keys[name], w.key_ids[name] = created.secret.get_secret_value(), created.key.id
        admin.revoke_key(w.key_ids["revoked"])
        time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.2)
        yield w
    finally:
        admin.close()
        srv.stop()


@dataclass(frozen=True)
class Sample:
    """One request to a route, naming workspace 1's things; `safe` ones change nothing. A call that
    is expected to succeed and change something (`fresh`) names a throwaway target made for it."""

    method: str
    path: str
    json: object = None
    safe: bool = True
    content: bytes | None = None
    content_type: str | None = None
    fresh: Callable[[], dict] | None = None  # the fields to replace, naming a new throwaway target


@cache
def model_zip() -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as zf:
        zf.writestr("model.py", byop_source(DOUBLE))
    return sink.getvalue()


@cache
def orchestration_zip() -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as zf:
        zf.writestr("main.py", "import time\ntime.sleep(600)\n")
    return sink.getvalue()


def orchestration_body(workspace_id: int, boundary: str) -> bytes:
    parts = [('name="file"; filename="o.zip"', "application/octet-stream", orchestration_zip()),
             ('name="metadata"', "application/json", json.dumps({"workspace_id": workspace_id, "name": "o"}).encode())]
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; {d}\r\nContent-Type: {t}\r\n\r\n".encode() + data
                    + b"\r\n" for d, t, data in parts)
    return body + f"--{boundary}--\r\n".encode()


def upload_body(workspace_id: int, boundary: str, metadata_first: bool = True, name: str = "acc-upload") -> bytes:
    meta = json.dumps({"name": name, "workspace_id": workspace_id, "conversion": {"python_version": PY},
                       "input_schema": schema_to_b64(X_SCHEMA), "output_schema": schema_to_b64(Y_SCHEMA)})
    parts = [('name="metadata"', "application/json", meta.encode()),
             ('name="file"; filename="m.zip"', "application/octet-stream", model_zip())]
    if not metadata_first:
        parts.reverse()
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; {d}\r\nContent-Type: {t}\r\n\r\n".encode() + data
                    + b"\r\n" for d, t, data in parts)
    return body + f"--{boundary}--\r\n".encode()


def samples(w: World) -> dict[tuple[str, str], Sample]:
    listener = {"monitored_pipeline": "acc-pipe", "listener_model": {"name": "acc-double"}}
    definition = {"steps": [{"ModelInference": {"models": [{"name": "acc-double"}]}}]}
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(minutes=10)).isoformat()}
    infer = {"content": b'[{"x": 1.0}]', "content_type": JSON}
    b = "acc-boundary"

    def fresh_pipeline(field: str, deployed: bool = False, **more: object) -> Callable[[], dict]:
        def make() -> dict:
            name, pipeline_id = w.new_pipeline(deployed)
            return {"json": {"pipeline_id": pipeline_id if field == "id" else name, **more}}
        return make

    return {
        ("GET", "/metrics"): Sample("GET", "/metrics"),
        ("GET", "/v1/api/openapi.json"): Sample("GET", "/v1/api/openapi.json"),
        ("GET", "/v1/api/docs"): Sample("GET", "/v1/api/docs"),
        ("GET", "/docs/oauth2-redirect"): Sample("GET", "/docs/oauth2-redirect"),
        ("POST", "/v1/api/workspaces/list"): Sample("POST", "/v1/api/workspaces/list", {}),
        ("POST", "/v1/api/workspaces/create"): Sample(
            "POST", "/v1/api/workspaces/create", {"workspace_name": "x"}, False,
            fresh=lambda: {"json": {"workspace_name": w.unique("ws")}}),
        ("POST", "/v1/api/keys/create"): Sample(
            "POST", "/v1/api/keys/create", {"name": "x", "role": "admin"}, False,
            fresh=lambda: {"json": {"name": w.unique("key"), "role": "inference", "pipelines": ["acc-pipe"]}}),
        ("POST", "/v1/api/keys/list"): Sample("POST", "/v1/api/keys/list", {}),
        ("POST", "/v1/api/keys/get"): Sample("POST", "/v1/api/keys/get", {"id": 1}),
        ("POST", "/v1/api/keys/update"): Sample("POST", "/v1/api/keys/update", {"id": w.key_ids["web"]}, False,
                                                fresh=lambda: {"json": {"id": w.new_key(), "name": w.unique("renamed")}}),
        ("POST", "/v1/api/keys/revoke"): Sample("POST", "/v1/api/keys/revoke", {"id": w.key_ids["web"]}, False,
                                                fresh=lambda: {"json": {"id": w.new_key()}}),
        ("POST", "/v1/api/usage/get"): Sample("POST", "/v1/api/usage/get", {}),
        ("POST", "/v1/api/models/upload_and_convert"): Sample(
            "POST", "/v1/api/models/upload_and_convert", None, False, upload_body(1, b),
            f"multipart/form-data; boundary={b}", fresh=lambda: {"content": upload_body(1, b, name=w.unique("upload"))}),
        ("POST", "/v1/api/models/list"): Sample("POST", "/v1/api/models/list", {"workspace_id": 1}),
        ("POST", "/v1/api/models/list_versions"): Sample("POST", "/v1/api/models/list_versions",
                                                         {"model_id": "acc-double", "models_pk_id": w.model_id}),
        ("POST", "/v1/api/models/get_model_version_by_id"): Sample(
            "POST", "/v1/api/models/get_model_version_by_id", {"model_version_id": w.version_id}),
        ("POST", "/v1/api/models/get_version_by_id"): Sample("POST", "/v1/api/models/get_version_by_id",
                                                             {"model_version_id": w.version_id}),
        ("POST", "/v1/api/models/insert_model_config"): Sample("POST", "/v1/api/models/insert_model_config",
                                                               {"model_version_id": w.version_id}),
        ("POST", "/v1/api/models/delete_model"): Sample(
            "POST", "/v1/api/models/delete_model", {"model_id": "acc-double", "workspace_id": 1}, False,
            fresh=lambda: {"json": {"model_id": w.new_model(), "workspace_id": 1}}),
        ("POST", "/v1/api/pipelines/create"): Sample(
            "POST", "/v1/api/pipelines/create", {"pipeline_id": "acc-new", "definition": definition}, False,
            fresh=lambda: {"json": {"pipeline_id": w.unique("new"), "definition": definition}}),
        ("POST", "/v1/api/pipelines/deploy"): Sample(
            "POST", "/v1/api/pipelines/deploy", {"pipeline_id": w.pipeline_id, "deploy_id": "acc-pipe"}, False,
            fresh=lambda: (lambda name, pid: {"json": {"pipeline_id": pid, "deploy_id": name}})(*w.new_pipeline())),
        ("POST", "/v1/api/pipelines/undeploy"): Sample("POST", "/v1/api/pipelines/undeploy",
                                                       {"pipeline_id": w.pipeline_id}, False,
                                                       fresh=fresh_pipeline("id", deployed=True)),
        ("POST", "/v1/api/pipelines/get_pipeline_by_name"): Sample(
            "POST", "/v1/api/pipelines/get_pipeline_by_name", {"pipeline_name": "acc-pipe", "workspace_id": 1}),
        ("POST", "/v1/api/pipelines/list_pipelines"): Sample("POST", "/v1/api/pipelines/list_pipelines", {"workspace_id": 1}),
        ("POST", "/v1/api/pipelines/list_pipeline_versions"): Sample(
            "POST", "/v1/api/pipelines/list_pipeline_versions", {"pipeline_id": "acc-pipe", "workspace_id": 1}),
        ("POST", "/v1/api/pipelines/delete_pipeline"): Sample(
            "POST", "/v1/api/pipelines/delete_pipeline", {"pipeline_id": "acc-pipe", "workspace_id": 1}, False,
            fresh=fresh_pipeline("name", workspace_id=1)),
        ("POST", "/v1/api/pipelines/set_guardrails"): Sample(
            "POST", "/v1/api/pipelines/set_guardrails", {"pipeline_id": "acc-pipe", "workspace_id": 1, "guardrails": None},
            False, fresh=fresh_pipeline("name", workspace_id=1, guardrails=None)),
        ("POST", "/v1/api/pipelines/get_guardrails"): Sample(
            "POST", "/v1/api/pipelines/get_guardrails", {"pipeline_id": "acc-pipe", "workspace_id": 1}),
        ("POST", "/v1/api/status/get_deployment"): Sample("POST", "/v1/api/status/get_deployment", {"name": w.deployment}),
        ("POST", "/v1/graphql"): Sample("POST", "/v1/graphql", {"query": "{ pipeline { id pipeline_id } }"}),
        ("POST", "/v1/api/pipelines/get_logs"): Sample("POST", "/v1/api/pipelines/get_logs", {"pipeline_name": "acc-pipe"}),
        ("POST", "/v1/api/plateau/get_topic_name"): Sample("POST", "/v1/api/plateau/get_topic_name",
                                                           {"pipeline_pk_id": w.pipeline_id}),
        ("POST", "/v1/logs/topic/{topic}/records"): Sample(
            "POST", "/v1/logs/topic/workspace-1-pipeline-acc-pipe-inference/records", {}),
        ("POST", "/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}"): Sample(
            "POST", f"/v1/api/pipelines/infer/{w.deployment}/acc-pipe", **infer),
        ("POST", "/v1/api/pipelines/infer/{deploy_name}"): Sample("POST", f"/v1/api/pipelines/infer/{w.deployment}", **infer),
        ("POST", "/infer/{pipeline_name}"): Sample("POST", "/infer/acc-pipe", **infer),
        **openai_samples(w),
        ("POST", "/v1/api/task/run_once"): Sample(
            "POST", "/v1/api/task/run_once", {"name": "x", "json": listener}, False,
            fresh=lambda: {"json": {"name": w.unique("once"), "json": listener}}),
        ("POST", "/v1/api/task/run_scheduled"): Sample(
            "POST", "/v1/api/task/run_scheduled", {"name": "x", "schedule": "0 0 1 1 *", "json": listener}, False,
            fresh=lambda: {"json": {"name": w.unique("cron"), "schedule": "0 0 1 1 *", "json": listener}}),
        ("POST", "/v1/api/task/get_by_id"): Sample("POST", "/v1/api/task/get_by_id", {"id": w.task_id}),
        ("POST", "/v1/api/task/list"): Sample("POST", "/v1/api/task/list", {"workspace_id": 1}),
        ("POST", "/v1/api/task/list_task_runs"): Sample("POST", "/v1/api/task/list_task_runs", {"task_id": w.task_id}),
        ("POST", "/v1/api/task/get_run_details"): Sample("POST", "/v1/api/task/get_run_details",
                                                         {"pod_id": w.run_id, "task": w.task_id}),
        ("POST", "/v1/api/task/get_logs_for_run"): Sample("POST", "/v1/api/task/get_logs_for_run", {"id": w.run_id}),
        ("POST", "/v1/api/task/kill"): Sample("POST", "/v1/api/task/kill", {"id": w.task_id}, False,
                                              fresh=lambda: {"json": {"id": w.new_task(schedule="0 0 1 1 *")}}),
        ("POST", "/v1/api/task/update"): Sample("POST", "/v1/api/task/update", {"id": w.task_id, "timeout": 60}, False),
        ("POST", "/v1/api/task/delete"): Sample("POST", "/v1/api/task/delete", {"id": w.task_id}, False,
                                                fresh=lambda: {"json": {"id": w.new_task(schedule="0 0 1 1 *")}}),
        ("POST", "/v1/api/listeners/results"): Sample("POST", "/v1/api/listeners/results", {"pipeline": "acc-pipe"}),
        ("POST", "/v1/api/assays/run"): Sample("POST", "/v1/api/assays/run", {
            "pipeline": "acc-pipe", "score": "y", "baseline": window, "window": window}),
        ("POST", "/v1/api/listeners/builtins"): Sample("POST", "/v1/api/listeners/builtins", {}),
        ("POST", "/v1/api/task/run_continuously"): Sample(
            "POST", "/v1/api/task/run_continuously", {"name": "x", "orch_id": w.orch_id, "json": {}}, False,
            fresh=lambda: {"json": {"name": w.unique("forever"), "orch_id": w.orch_id, "json": {}}}),
        ("POST", "/v1/api/orchestration/upload"): Sample(
            "POST", "/v1/api/orchestration/upload", None, False, orchestration_body(1, b),
            f"multipart/form-data; boundary={b}"),
        ("POST", "/v1/api/orchestration/list"): Sample("POST", "/v1/api/orchestration/list", {"workspace_id": 1}),
        ("POST", "/v1/api/orchestration/list_all"): Sample("POST", "/v1/api/orchestration/list_all", {"workspace_ids": [1]}),
        ("POST", "/v1/api/orchestration/get_by_id"): Sample("POST", "/v1/api/orchestration/get_by_id", {"id": w.orch_id}),
        ("POST", "/v1/api/orchestration/requirements"): Sample("POST", "/v1/api/orchestration/requirements",
                                                               {"id": w.orch_id}),
        **listener_run_samples(),
        ("POST", "/v1/api/orchestration/delete_orchestrations"): Sample(
            "POST", "/v1/api/orchestration/delete_orchestrations", {"orchestrations": [w.orch_id]}, False,
            fresh=lambda: {"json": {"orchestrations": [w.admin.wait_for_orchestration(w.new_orchestration()).id]}}),
        **publish_samples(),
    }


def listener_run_samples() -> dict[tuple[str, str], Sample]:
    """What a built-in listener run calls back (D58): no key of the table is a running run's own."""
    bodies = {"page": {"start_ms": 0, "end_ms": 1, "limit": 1}, "claim": {"keys": [], "times": []},
              "settle": {"keys": [], "done": False}, "report": {}, "sealed": {},
              "settle_segments": {"segments": [], "older_than_ms": 0}}
    out = {("POST", f"/v1/api/task/listener_run/{name}"): Sample("POST", f"/v1/api/task/listener_run/{name}", body)
           for name, body in bodies.items()}
    out["POST", "/v1/api/task/listener_run/scores"] = Sample(
        "POST", "/v1/api/task/listener_run/scores", None, False, b"not arrow", "application/vnd.apache.arrow.stream")
    return out


def publish_samples() -> dict[tuple[str, str], Sample]:
    """The publish routes: admin-only. This runtime publishes nowhere and holds no publish, so the
    admin gets past access to a 400 (no registry) or a 404 (no such publish); tests/publish has the rest."""
    none = 999
    return {
        ("POST", "/v1/api/pipelines/publish"): Sample("POST", "/v1/api/pipelines/publish", {"pipeline_version_id": 1}),
        ("POST", "/v1/api/pipelines/get_publish_status"): Sample("POST", "/v1/api/pipelines/get_publish_status",
                                                                 {"id": none}),
        ("POST", "/v1/api/pipelines/list_publishes_for_pipeline"): Sample(
            "POST", "/v1/api/pipelines/list_publishes_for_pipeline", {}),
        ("POST", "/v1/api/pipelines/add_edge_to_publish"): Sample(
            "POST", "/v1/api/pipelines/add_edge_to_publish", {"name": "acc-edge", "pipeline_publish_id": none}),
        ("POST", "/v1/api/pipelines/remove_edge"): Sample("POST", "/v1/api/pipelines/remove_edge", {"name": "acc-edge"}),
        ("POST", "/v1/api/pipelines/list_edges_by_publish_id"): Sample(
            "POST", "/v1/api/pipelines/list_edges_by_publish_id", {"publish_id": none}),
        ("POST", "/v1/api/pipelines/delete_publish"): Sample("POST", "/v1/api/pipelines/delete_publish", {"id": none}),
        ("POST", "/v1/api/pipelines/get_publish_image"): Sample("POST", "/v1/api/pipelines/get_publish_image",
                                                                {"id": none}),
    }


def openai_samples(w: World) -> dict[tuple[str, str], Sample]:
    """The OpenAI-compatible routes on acc-pipe, whose model has no openai_config: past access, a 404."""
    chat = {"model": "", "messages": [{"role": "user", "content": "hi"}]}
    done = {"model": "", "prompt": "hi"}
    full, edge = "/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}/openai/v1", "/infer/{pipeline_name}/openai/v1"
    url = f"/v1/api/pipelines/infer/{w.deployment}/acc-pipe/openai/v1"
    return {
        ("POST", f"{full}/chat/completions"): Sample("POST", f"{url}/chat/completions", chat),
        ("POST", f"{full}/completions"): Sample("POST", f"{url}/completions", done),
        ("POST", f"{edge}/chat/completions"): Sample("POST", "/infer/acc-pipe/openai/v1/chat/completions", chat),
        ("POST", f"{edge}/completions"): Sample("POST", "/infer/acc-pipe/openai/v1/completions", done),
    }


def call(w: World, sample: Sample, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if sample.content is not None:
        headers["Content-Type"] = sample.content_type or "application/octet-stream"
        return httpx.request(sample.method, w.server.url + sample.path, content=sample.content, headers=headers, timeout=60)
    return httpx.request(sample.method, w.server.url + sample.path, json=sample.json, headers=headers, timeout=60)


#: Who may call what, written out from the README's "Keys" section (and docs/decisions.md D32), not
#: read from the runtime's rule table: the exact status each key gets from each route, named as the
#: fixture's keys are.
#:   admin        `admin-two`: an admin key (not the runtime's own token) - everything
#:   deployer     `dep-one`:   a deployer of workspace 1, where every sample's target lives - models,
#:                             pipelines, deployments, listener tasks, logs, scores and inference there
#:   deployer-2   `dep-two`:   a deployer of workspace 2 - nothing of workspace 1; only what holds no
#:                             one's data (the API docs, GraphQL (answering with its own workspace's
#:                             objects), a topic's name, the catalogue of built-in listeners)
#:   infer        `web`:       an inference key for acc-pipe - inference on acc-pipe only
#:   infer+logs   `web-logs`:  the same with read_logs - also acc-pipe's logs and listener scores
#:   infer-2      `ws2-infer`: an inference key for all of workspace 2 - nothing of workspace 1
#: 200/201/202: done (201: a task created, 202: accepted, going on in the background: an upload, a
#: kill); 403: refused, naming what the key lacks; 404 on the OpenAI routes: let through, and acc-pipe's
#: model has no OpenAI endpoint. (Unknown, expired and revoked keys get 401 everywhere: below.)
ROLES = ("admin", "deployer", "deployer-2", "infer", "infer+logs", "infer-2")
KEY_OF = {"admin": "admin-two", "deployer": "dep-one", "deployer-2": "dep-two", "infer": "web", "infer+logs": "web-logs",
          "infer-2": "ws2-infer"}
ADMIN_ONLY = (200, 403, 403, 403, 403, 403)
DEPLOY = (200, 200, 403, 403, 403, 403)
NO_ONES_DATA = (200, 200, 200, 403, 403, 403)
LOGS = (200, 200, 403, 403, 200, 403)
INFER = (200, 200, 403, 200, 200, 403)
OPENAI = (404, 404, 403, 404, 404, 403)
NO_PUBLISH = (404, 403, 403, 403, 403, 403)  # admin-only, and the admin reaches a publish this runtime lacks
NOT_A_RUN = (403, 403, 403, 403, 403, 403)  # only a running listener run's own key, which none of these is (D58)
EXPECTED: dict[tuple[str, str], tuple[int, int, int, int, int, int]] = {
    #                                                               admin deployer deployer-2 infer infer+logs infer-2
    ("GET", "/metrics"): ADMIN_ONLY,
    ("GET", "/v1/api/openapi.json"): NO_ONES_DATA,
    ("GET", "/v1/api/docs"): NO_ONES_DATA,
    ("GET", "/docs/oauth2-redirect"): NO_ONES_DATA,
    ("POST", "/v1/api/workspaces/list"): ADMIN_ONLY,
    ("POST", "/v1/api/workspaces/create"): ADMIN_ONLY,
    ("POST", "/v1/api/keys/create"): ADMIN_ONLY,
    ("POST", "/v1/api/keys/list"): ADMIN_ONLY,
    ("POST", "/v1/api/keys/get"): ADMIN_ONLY,
    ("POST", "/v1/api/keys/update"): ADMIN_ONLY,
    ("POST", "/v1/api/keys/revoke"): ADMIN_ONLY,
    ("POST", "/v1/api/usage/get"): ADMIN_ONLY,
    ("POST", "/v1/api/models/upload_and_convert"): (202, 202, 403, 403, 403, 403),
    ("POST", "/v1/api/models/list"): DEPLOY,
    ("POST", "/v1/api/models/list_versions"): DEPLOY,
    ("POST", "/v1/api/models/get_model_version_by_id"): DEPLOY,
    ("POST", "/v1/api/models/get_version_by_id"): DEPLOY,
    ("POST", "/v1/api/models/insert_model_config"): DEPLOY,
    ("POST", "/v1/api/models/delete_model"): DEPLOY,
    ("POST", "/v1/api/pipelines/create"): DEPLOY,
    ("POST", "/v1/api/pipelines/deploy"): DEPLOY,
    ("POST", "/v1/api/pipelines/undeploy"): DEPLOY,
    ("POST", "/v1/api/pipelines/get_pipeline_by_name"): DEPLOY,
    ("POST", "/v1/api/pipelines/list_pipelines"): DEPLOY,
    ("POST", "/v1/api/pipelines/list_pipeline_versions"): DEPLOY,
    ("POST", "/v1/api/pipelines/delete_pipeline"): DEPLOY,
    ("POST", "/v1/api/pipelines/set_guardrails"): DEPLOY,
    ("POST", "/v1/api/pipelines/get_guardrails"): DEPLOY,
    ("POST", "/v1/api/status/get_deployment"): DEPLOY,
    ("POST", "/v1/graphql"): NO_ONES_DATA,
    ("POST", "/v1/api/pipelines/get_logs"): LOGS,
    ("POST", "/v1/api/plateau/get_topic_name"): NO_ONES_DATA,
    ("POST", "/v1/logs/topic/{topic}/records"): LOGS,
    ("POST", "/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}"): INFER,
    ("POST", "/v1/api/pipelines/infer/{deploy_name}"): INFER,
    ("POST", "/infer/{pipeline_name}"): INFER,
    ("POST", "/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}/openai/v1/chat/completions"): OPENAI,
    ("POST", "/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}/openai/v1/completions"): OPENAI,
    ("POST", "/infer/{pipeline_name}/openai/v1/chat/completions"): OPENAI,
    ("POST", "/infer/{pipeline_name}/openai/v1/completions"): OPENAI,
    ("POST", "/v1/api/task/run_once"): (201, 201, 403, 403, 403, 403),
    ("POST", "/v1/api/task/run_scheduled"): (201, 201, 403, 403, 403, 403),
    ("POST", "/v1/api/task/get_by_id"): DEPLOY,
    ("POST", "/v1/api/task/list"): DEPLOY,
    ("POST", "/v1/api/task/list_task_runs"): DEPLOY,
    ("POST", "/v1/api/task/get_run_details"): DEPLOY,
    ("POST", "/v1/api/task/get_logs_for_run"): DEPLOY,
    ("POST", "/v1/api/task/kill"): (202, 202, 403, 403, 403, 403),
    ("POST", "/v1/api/task/update"): DEPLOY,
    ("POST", "/v1/api/task/delete"): DEPLOY,
    ("POST", "/v1/api/listeners/results"): LOGS,
    ("POST", "/v1/api/assays/run"): LOGS,
    ("POST", "/v1/api/listeners/builtins"): NO_ONES_DATA,
    ("POST", "/v1/api/pipelines/publish"): (400, 403, 403, 403, 403, 403),  # past access: no registry here
    ("POST", "/v1/api/pipelines/get_publish_status"): NO_PUBLISH,
    ("POST", "/v1/api/pipelines/list_publishes_for_pipeline"): ADMIN_ONLY,
    ("POST", "/v1/api/pipelines/add_edge_to_publish"): NO_PUBLISH,
    ("POST", "/v1/api/pipelines/remove_edge"): NO_PUBLISH,
    ("POST", "/v1/api/pipelines/list_edges_by_publish_id"): NO_PUBLISH,
    ("POST", "/v1/api/pipelines/delete_publish"): NO_PUBLISH,
    ("POST", "/v1/api/pipelines/get_publish_image"): NO_PUBLISH,
    ("POST", "/v1/api/task/run_continuously"): (201, 201, 403, 403, 403, 403),
    ("POST", "/v1/api/orchestration/upload"): (202, 202, 403, 403, 403, 403),
    ("POST", "/v1/api/orchestration/list"): DEPLOY,
    ("POST", "/v1/api/orchestration/list_all"): DEPLOY,
    ("POST", "/v1/api/orchestration/get_by_id"): DEPLOY,
    ("POST", "/v1/api/orchestration/requirements"): (204, 204, 403, 403, 403, 403),  # it has none to fetch
    **{("POST", f"/v1/api/task/listener_run/{call}"): NOT_A_RUN for call in (
        "page", "sealed", "settle_segments", "claim", "settle", "scores", "report")},
    ("POST", "/v1/api/orchestration/delete_orchestrations"): DEPLOY,
}
#: Routes outside API keys: an edge's own calls, authenticated by its join token and edge key (tests/publish).
EDGE_OWN = {("POST", "/v1/api/edge/join"), ("POST", "/v1/api/edge/ship_logs")}


def test_every_route_is_in_the_table_and_has_a_sample(world: World) -> None:
    spec = httpx.get(world.server.url + "/v1/api/openapi.json", headers=world.server.headers).json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops} - {("GET", "/health"), ("GET", "/v1/api/config")}
    routes -= EDGE_OWN
    assert routes <= set(EXPECTED), f"routes missing from the table: {sorted(routes - set(EXPECTED))}"  # (+ the docs' own)
    assert set(samples(world)) == set(EXPECTED)


def message(r: httpx.Response) -> str:
    """An error answer's message: Wallaroo's `error` string, or OpenAI's `error.message` on its routes."""
    error = r.json()["error"]
    return error if isinstance(error, str) else error["message"]


def test_unknown_expired_and_revoked_keys_get_401_everywhere(world: World) -> None:
    for key, sample in samples(world).items():
        for token, says in (("wlr_not-a-key", "invalid token"), (world.keys["revoked"], "revoked"),
                            (world.keys["expired"], "expired")):
            r = call(world, sample, token)
            assert r.status_code == 401, (key, token, r.text)
            assert says in message(r) and r.headers["WWW-Authenticate"] == "Bearer", r.text
            if key in openai_samples(world):  # OpenAI's error shape on its routes, so its clients raise typed errors
                assert r.json()["error"]["type"] == "authentication_error", r.text
            assert str(world.server.data_dir) not in r.text


@pytest.mark.parametrize("role", ROLES)
def test_each_key_gets_exactly_what_the_table_says_from_every_route(world: World, role: str) -> None:
    name = KEY_OF[role]
    label = f"key {world.key_ids[name]} ('{name}', role {'inference' if role.startswith('infer') else role.rstrip('-2')})"
    wrong = []
    for key, sample in samples(world).items():
        expected = EXPECTED[key][ROLES.index(role)]
        if 200 <= expected < 300 and sample.fresh is not None:
            sample = replace(sample, **sample.fresh())
        r = call(world, sample, world.keys[name])
        if r.status_code != expected:
            wrong.append(f"{key[0]} {key[1]}: expected {expected}, got {r.status_code} {r.text[:200]}")
        elif expected == 403 and not message(r).startswith(f"{label} lacks "):
            wrong.append(f"{key[0]} {key[1]}: 403 without naming the key and what it lacks: {message(r)}")
        elif key in openai_samples(world) and expected == 404 and "no OpenAI endpoint" not in message(r):
            wrong.append(f"{key[0]} {key[1]}: 404 for another reason than the model's missing OpenAI endpoint: {r.text}")
        elif EXPECTED[key] == INFER and expected == 200 and r.json()[0]["out"]["y"] != 2.0:
            wrong.append(f"{key[0]} {key[1]}: inferred {r.text}")
    assert not wrong, f"{role} ({name}):\n" + "\n".join(wrong)
    # what every call above named is still there (the mutating calls that succeeded took throwaway targets)
    assert world.admin.get_pipeline("acc-pipe").deployed
    assert "acc-double" in {m.name for m in world.admin.list_models(workspace_id=1)}


def test_an_inference_key_infers_on_its_own_pipelines_only(world: World) -> None:
    r = call(world, Sample("POST", "/v1/api/models/list", {"workspace_id": 1}), world.keys["web"])
    assert r.status_code == 403 and r.json()["error"].startswith(  # the README's example, word for word
        f"key {world.key_ids['web']} ('web', role inference) lacks the 'deploy' permission"), r.text
    r = httpx.post(f"{world.server.url}/infer/acc-two-pipe", content=b'[{"x": 1.0}]',
                   headers={"Authorization": f"Bearer {world.keys['web']}", "Content-Type": JSON})
    assert r.status_code == 403 and "lacks 'infer' on pipeline 'acc-two-pipe'" in r.json()["error"], r.text
    # the client infers with it (it may not read the pipeline to find its deployment)
    with WallarooClient(world.server.url, world.keys["web"]) as web:
        assert web.infer("acc-pipe", pd.DataFrame({"x": [3.0]}))["out.y"].tolist() == [6.0]
        with pytest.raises(AuthError, match="lacks the 'deploy' permission"):
            web.list_pipelines()


def test_read_logs_widens_an_inference_key_to_its_own_pipelines_logs_only(world: World) -> None:
    r = httpx.post(world.server.url + "/v1/api/pipelines/get_logs", json={"pipeline_name": "acc-two-pipe"},
                   headers={"Authorization": f"Bearer {world.keys['web-logs']}"})
    assert r.status_code == 403 and "lacks 'read_logs' on pipeline 'acc-two-pipe'" in r.json()["error"], r.text


def test_a_workspace_key_reaches_nothing_in_another_workspace(world: World) -> None:
    dep2 = {"Authorization": f"Bearer {world.keys['dep-two']}"}
    r = httpx.post(world.server.url + "/v1/api/models/list", json={"workspace_id": 1}, headers=dep2)
    assert r.json()["error"].endswith(f"lacks 'deploy' on workspace 1: it is scoped to workspace {world.ws2}")
    r = httpx.post(world.server.url + "/v1/api/models/list", json={}, headers=dep2)
    assert r.status_code == 403 and f"pass workspace_id {world.ws2}" in r.json()["error"]
    # its own workspace answers (the ws2 inference key infers there, and only infers)
    r = httpx.post(world.server.url + "/v1/api/pipelines/list_pipelines", json={"workspace_id": world.ws2}, headers=dep2)
    assert r.status_code == 200 and [p["pipeline"]["name"] for p in r.json()["pipelines"]] == ["acc-two-pipe"]
    # its GraphQL sees its own workspace only
    r = httpx.post(world.server.url + "/v1/graphql", json={"query": "{ pipeline { pipeline_id } }"}, headers=dep2)
    assert r.status_code == 200 and r.json()["data"]["pipeline"] == [{"pipeline_id": "acc-two-pipe"}], r.text
    r = httpx.post(f"{world.server.url}/infer/acc-two-pipe", content=b'[{"x": 2.0}]',
                   headers={"Authorization": f"Bearer {world.keys['ws2-infer']}", "Content-Type": JSON})
    assert r.status_code == 200 and r.json()[0]["out"]["y"] == 4.0
    # a pipeline in workspace 2 may not name a workspace-1 model version; an upload names its workspace first
    r = httpx.post(world.server.url + "/v1/api/pipelines/create", headers=dep2, json={
        "pipeline_id": "sneaky", "workspace_id": world.ws2,
        "definition": {"steps": [{"ModelInference": {"models": [{"name": "acc-double", "model_version_id": world.version_id}]}}]}})
    assert r.status_code == 403 and "workspace 1" in r.json()["error"], r.text
    # the file before its metadata (the Wallaroo SDK's order): checked once the metadata is read, nothing kept if denied
    b = "late-metadata"
    artifacts = world.server.data_dir / "artifacts"
    before = sorted(p.name for p in artifacts.rglob("*") if p.is_file())
    r = httpx.post(world.server.url + "/v1/api/models/upload_and_convert", content=upload_body(1, b, False, "acc-late"),
                   headers={**dep2, "Content-Type": f"multipart/form-data; boundary={b}"})
    assert r.status_code == 403 and r.json()["error"].endswith(f"lacks 'deploy' on workspace 1: it is scoped to "
                                                               f"workspace {world.ws2}"), r.text
    assert sorted(p.name for p in artifacts.rglob("*") if p.is_file()) == before
    assert "acc-late" not in {m.name for m in world.admin.list_models(workspace_id=1)}
    r = httpx.post(world.server.url + "/v1/api/models/upload_and_convert", content=upload_body(world.ws2, b, False),
                   headers={**dep2, "Content-Type": f"multipart/form-data; boundary={b}"})
    assert r.status_code == 202, r.text
    r = httpx.post(world.server.url + "/v1/api/models/upload_and_convert", content=upload_body(world.ws2, b),
                   headers={**dep2, "Content-Type": f"multipart/form-data; boundary={b}"})
    assert r.status_code == 202, r.text


def test_keys_api(world: World) -> None:
    admin = world.admin
    created = admin.create_key("temp", "inference", pipelines=["acc-pipe"], tokens_per_day=1000)
    secret = created.secret.get_secret_value()
    assert secret.startswith("wlr_") and secret not in repr(created)
    listed = {k.id: k for k in admin.list_keys()}
    assert listed[created.key.id].limits["tokens_per_day"] == 1000 and listed[created.key.id].last_used_at is None
    assert secret not in json.dumps(httpx.post(world.server.url + "/v1/api/keys/list", json={},
                                               headers=world.server.headers).json())
    httpx.post(f"{world.server.url}/infer/acc-pipe", content=b'[{"x": 1.0}]',
               headers={"Authorization": f"Bearer {secret}", "Content-Type": JSON})
    assert admin.get_key(created.key.id).last_used_at is not None
    updated = admin.update_key(created.key.id, name="renamed", limits={"requests_per_minute": 5}, expires_at=None)
    assert updated.name == "renamed" and updated.limits == {"requests_per_minute": 5, "tokens_per_minute": None,
                                                            "tokens_per_day": None}
    revoked = admin.revoke_key(created.key.id)
    assert revoked.status == "revoked" and created.key.id not in {k.id for k in admin.list_keys()}
    assert created.key.id in {k.id for k in admin.list_keys(include_revoked=True)}
    assert admin.revoke_key(created.key.id).revoked_at == revoked.revoked_at  # idempotent
    # only hashes are stored
    time.sleep(0.1)
    db = (world.server.data_dir / "runtime.db").read_bytes() + (world.server.data_dir / "runtime.db-wal").read_bytes()
    assert all(s.encode() not in db for s in [secret, *world.keys.values()])
    # bad input names the field; the runtime's own admin token stays
    with pytest.raises(ValidationError, match="workspace_id: a deployer key needs the workspace"):
        admin.create_key("d", "deployer")
    with pytest.raises(NotFoundError, match="workspace_id: no workspace with id 99"):
        admin.create_key("d", "deployer", workspace_id=99)
    with pytest.raises(ValidationError, match="expires_at: .* is not in the future"):
        admin.create_key("d", "admin", expires_at="2001-01-01T00:00:00Z")
    r = httpx.post(world.server.url + "/v1/api/keys/create", json={"name": "d", "role": "admin", "limits": {"rpm": 1}},
                   headers=world.server.headers)
    assert r.status_code == 400 and "limits.rpm: Extra inputs are not permitted" in r.json()["error"]
    with pytest.raises(ConflictError, match="runtime's own admin token"):
        admin.revoke_key(1)
