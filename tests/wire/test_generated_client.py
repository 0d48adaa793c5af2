"""Every MLOps endpoint the runtime serves, through the pinned Wallaroo SDK's generated client
(`wallaroo_ml_ops_api_client`, generated from Wallaroo's OpenAPI spec): the status it documents,
and `parsed` is the typed model, i.e. the answer has every field the model requires, with its types
and enum values. Errors parse too (Wallaroo's `msg`/`code` body)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.publish.conftest import base_image, centre_args, centre_env, registry  # noqa: F401 - fixtures
from tests.runtime.conftest import X_SCHEMA, Y_SCHEMA, Server, make_model
from tests.wire.conftest import run_sdk
from wallaroo_pulumi.orchestration import ORCHESTRATION_ID
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer

ECHO = 'import os\nreturn {"y": input_data["x"] * 2.0 + len(os.environ.get("SECRET_KEY", ""))}'

EXPECTED = {
    "workspaces/list": (200, "WorkspacesListResponse200"),
    "workspaces/create": (200, "WorkspacesCreateResponse200"),
    "models/upload_and_convert": (202, "UploadResponse"),
    "models/get_model_version_by_id": (200, "GetModelByIdResponse"),
    "models/insert_model_config": (200, "InsertModelConfigResponse"),
    "models/list": (200, "ListModelsResponse"),
    "models/list_versions": (200, "list[ModelsListVersionsResponse200Item]"),
    "pipelines/create": (200, "PipelinesCreateResponse200"),
    "pipelines/create 400": (400, "PipelinesCreateResponse400"),
    "pipelines/create 401": (401, "PipelinesCreateResponse401"),
    "pipelines/deploy": (200, "PipelinesDeployResponse200"),
    "status/get_deployment": (200, "StatusGetDeploymentResponse200"),
    "pipelines/get_pipeline_by_name": (200, "GetPipelineByNameResponse200"),
    "pipelines/list_pipelines": (200, "ListPipelinesResponse200"),
    "pipelines/list_pipeline_versions": (200, "ListPipelineVersionsResponse200"),
    "plateau/get_topic_name": (200, "PlateauGetTopicNameResponse200"),
    "pipelines/get_logs": (200, None),  # the spec types its 200 as any body: Arrow or JSON records
    "pipelines/get_logs 400": (400, "PipelinesGetLogsResponse400"),
    "task/run_once": (201, "OneshotResponse201"),
    "task/run_scheduled": (201, "CronJobResponse201"),
    "task/list_task_runs": (200, "list[ListTaskRunsResponseTaskRuns]"),
    "task/list_task_runs status": (200, "list[]"),
    "task/get_run_details": (200, "GetRunDetailsResponse200"),
    "task/get_logs_for_run": (200, "GetLogsForRunResponse200"),
    "task/get_by_id": (200, "TaskGetByIdResponse200"),
    "task/list": (200, "list[Task]"),
    "task/kill": (202, "KillResponse202"),
    "task/get_by_id 404": (404, None),
    "orchestration/upload": (202, "OrchestrationUploadResponse202"),
    "orchestration/get_by_id": (200, "GetOrchestrationByIdResponse"),
    "orchestration/list": (200, "list[Orchestration]"),
    "orchestration/list_all": (200, "ListAllOrchestrationsResponse"),
    "task/run_continuously": (201, "NetworkServiceResponse201"),
    "orchestration/delete_orchestrations": (200, "DeleteOrchestrationsResponse200"),
    "pipelines/undeploy": (200, "PipelinesUndeployResponse200"),
    "pipelines/delete_pipeline": (200, "DeletePipelineResponse200"),
    "models/delete_model": (200, "DeleteModelResponse200"),
}

#: driven against a runtime that publishes (test_the_publish_endpoints_parse_as_the_generated_clients_models)
PUBLISH_EXPECTED = {
    "pipelines/publish": (202, "PublishPipelineResponse202"),
    "pipelines/get_publish_status": (200, "GetPublishStatusResponse200"),
    "pipelines/add_edge_to_publish": (201, "AddEdgeToPublishResponse201"),
    "pipelines/list_edges_by_publish_id": (200, "ListEdgesByPublishIdResponse200"),
    "pipelines/list_publishes_for_pipeline": (200, "ListPublishesForPipelineResponse200"),
    "pipelines/remove_edge": (200, None),  # the spec gives its 200 no body
}


@pytest.fixture
def publishing_server(tmp_path: Path, registry: RegistryServer, base_image: str) -> Iterator[Server]:  # noqa: F811
    srv = Server(tmp_path / "publishing", centre_args(registry, base_image), centre_env(registry)).start()
    yield srv
    srv.stop()


@pytest.mark.timeout(900)
def test_the_publish_endpoints_parse_as_the_generated_clients_models(sdk_python: str, publishing_server: Server,
                                                                     tmp_path: Path) -> None:
    with publishing_server.client() as api:
        mv = api.upload_model("wire-edge-model", make_model(tmp_path, "wire-edge-model", ECHO), X_SCHEMA, Y_SCHEMA)
        created = api.create_pipeline("wire-edge", steps=[mv])
    lines = run_sdk(sdk_python, "publish_endpoints.py", publishing_server.url, publishing_server.token,
                    str(created.pipeline_id), str(created.pipeline_version_pk_id), str(mv.id), server=publishing_server)
    got = {line["endpoint"]: (line["status"], line["parsed"]) for line in lines}
    assert got == PUBLISH_EXPECTED
    assert next(line["value"] for line in lines if line["endpoint"] == "pipelines/get_publish_status") == "Published"


@pytest.mark.timeout(1800)
def test_every_endpoint_parses_as_the_generated_clients_model(sdk_python: str, wire_server: Server, tmp_path) -> None:
    model = make_model(tmp_path, "echo", ECHO)
    lines = run_sdk(sdk_python, "endpoints.py", wire_server.url, wire_server.token, str(model), ORCHESTRATION_ID,
                    server=wire_server)
    got = {line["endpoint"]: (line["status"], line["parsed"]) for line in lines if "endpoint" in line}
    assert got == EXPECTED
    status = next(line for line in lines if line.get("endpoint") == "status/get_deployment")
    assert status["value"] == "Running"
    assert next(line["run_status"] for line in lines if "run_status" in line) == "success"

    generated = set(next(line["generated_urls"] for line in lines if "generated_urls" in line))
    spec = httpx.get(wire_server.url + "/v1/api/openapi.json", headers=wire_server.headers).json()
    served = {path for path, ops in spec["paths"].items() if "post" in ops}
    called = {"/v1/api/" + name.split(" ")[0] for name in [*got, *PUBLISH_EXPECTED]}
    assert served & generated == called, "an endpoint served in Wallaroo's API is not driven here"


@pytest.mark.timeout(900)
def test_a_workspace_deployer_key_uploads_through_the_sdk(sdk_python: str, wire_server: Server, tmp_path) -> None:
    """The SDK sends the model file before its metadata: a deployer key's workspace is checked once
    the metadata is read, and a denied upload leaves nothing behind."""
    model = str(make_model(tmp_path, "echo", ECHO))
    with wire_server.client() as admin:
        ws = admin.create_workspace("wire-deployer").id
        key = admin.create_key("wire-deployer", "deployer", workspace_id=ws).secret.get_secret_value()
        [own] = run_sdk(sdk_python, "upload.py", wire_server.url, key, model, str(ws), "dep-own", server=wire_server)
        [other] = run_sdk(sdk_python, "upload.py", wire_server.url, key, model, "1", "dep-other", server=wire_server)
        assert (own["status"], own["parsed"]) == (202, "UploadResponse"), own
        assert other["status"] == 403 and f"lacks 'deploy' on workspace 1: it is scoped to workspace {ws}" in other["body"]
        assert "dep-own" in {m.name for m in admin.list_models(workspace_id=ws)}
        assert "dep-other" not in {m.name for m in admin.list_models(workspace_id=1)}
