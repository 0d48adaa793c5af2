"""Runs INSIDE the pinned Wallaroo SDK's venv (scripts/wallaroo-sdk): every MLOps endpoint the
runtime serves, called through the SDK's generated client (`sync_detailed`), printing one JSON
line per call: the endpoint, the status and the type `parsed` came back as (None: it did not parse).

usage: python endpoints.py URL TOKEN MODEL_ZIP ORCH_ID
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pyarrow as pa
from wallaroo.wallaroo_ml_ops_api_client.api.misc import status_get_deployment
from wallaroo.wallaroo_ml_ops_api_client.api.model import (
    delete_model,
    get_model_version_by_id,
    insert_model_config,
    list_models,
    models_list_versions,
    models_upload_and_convert,
)
from wallaroo.wallaroo_ml_ops_api_client.api.orchestration import (
    delete_orchestrations,
    orchestration_get_by_id,
    orchestration_list,
    orchestration_list_all,
    orchestration_upload,
)
from wallaroo.wallaroo_ml_ops_api_client.api.pipelines import (
    delete_pipeline,
    get_pipeline_by_name,
    list_pipeline_versions,
    list_pipelines,
    pipelines_create,
    pipelines_deploy,
    pipelines_get_logs,
    pipelines_undeploy,
)
from wallaroo.wallaroo_ml_ops_api_client.api.plateau import plateau_get_topic_name
from wallaroo.wallaroo_ml_ops_api_client.api.task import (
    cron_job,
    get_logs_for_run,
    get_run_details,
    kill,
    list_task_runs,
    network_service,
    oneshot,
    task_get_by_id,
    task_list,
)
from wallaroo.wallaroo_ml_ops_api_client.api.workspace import workspaces_create, workspaces_list
from wallaroo.wallaroo_ml_ops_api_client.client import AuthenticatedClient
from wallaroo.wallaroo_ml_ops_api_client.models import (
    Conversion,
    CronJobBody,
    CronJobBodyJson,
    DeleteModelBody,
    DeleteOrchestrationsBody,
    DeletePipelineBody,
    Framework,
    GetLogsForRunRequest,
    GetModelByIdRequest,
    GetOrchestrationByIdRequest,
    GetPipelineByNameBody,
    GetRunDetailsRequest,
    GetTaskByIdRequest,
    InsertModelConfigRequest,
    KillRequest,
    ListAllOrchestrationsRequest,
    ListModelsRequest,
    ListOrchestrationsRequest,
    ListPipelinesBody,
    ListPipelineVersionsBody,
    ListTaskRunsRequest,
    ListTaskRunsRequestStatus,
    ListTasksRequest,
    ModelsListVersionsBody,
    ModelVersionStub,
    NetworkServiceRequest,
    NetworkServiceRequestJson,
    OneshotRequest,
    OneshotRequestJson,
    OpenAiConfig,
    OrchestrationUploadBody,
    PipelinesCreateBody,
    PipelinesCreateBodyDefinitionType0,
    PipelinesDeployBody,
    PipelinesGetLogsBody,
    PipelinesGetLogsBodyOrder,
    PipelinesUndeployBody,
    PlateauGetTopicNameBody,
    PythonVersion,
    StatusGetDeploymentBody,
    UploadOrchestrationRequest,
    UploadPayloadDoc,
    UploadRequest,
    WorkspacesCreateBody,
    WorkspacesListBody,
)
from wallaroo.wallaroo_ml_ops_api_client.types import File

url, token, model_zip, orch_id = sys.argv[1:5]
client = AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=False)
stranger = AuthenticatedClient(base_url=url, token="wlr_not-a-key", raise_on_unexpected_status=False)


def report(endpoint: str, response: Any) -> Any:
    parsed = response.parsed
    if isinstance(parsed, list):
        kind = "list[" + ",".join(sorted({type(p).__name__ for p in parsed})) + "]"
    else:
        kind = None if parsed is None else type(parsed).__name__
    value = getattr(getattr(parsed, "status", None), "value", None)  # a deployment's status
    print(json.dumps({"endpoint": endpoint, "status": int(response.status_code), "parsed": kind, "value": value}), flush=True)
    return parsed


def schema_b64(schema: pa.Schema) -> str:
    return base64.b64encode(bytes(schema.serialize())).decode()


report("workspaces/list", workspaces_list.sync_detailed(client=client, body=WorkspacesListBody()))
report("workspaces/create", workspaces_create.sync_detailed(client=client, body=WorkspacesCreateBody("wire-ws")))

with open(model_zip, "rb") as f:
    metadata = UploadRequest(
        conversion=Conversion(framework=Framework.CUSTOM, requirements=[], python_version=PythonVersion.VALUE_1),
        name="wire-echo", visibility="private", workspace_id=1,
        input_schema=schema_b64(pa.schema([("x", pa.float64())])), output_schema=schema_b64(pa.schema([("y", pa.float64())])),
    )
    uploaded = report("models/upload_and_convert", models_upload_and_convert.sync_detailed(
        client=client, body=UploadPayloadDoc(file=File(payload=f, file_name="echo.zip"), metadata=metadata)))
version_id = uploaded.insert_models.returning[0].models[0].id
configured = report("models/get_model_version_by_id", get_model_version_by_id.sync_detailed(
    client=client, body=GetModelByIdRequest(model_version_id=version_id))).model_version
report("models/insert_model_config", insert_model_config.sync_detailed(client=client, body=InsertModelConfigRequest(
    model_version_id=version_id, openai_config=OpenAiConfig(enabled=False))))
listed = report("models/list", list_models.sync_detailed(client=client, body=ListModelsRequest(workspace_id=1)))
models_pk_id = next(m.model.id for m in listed.models if m.model.name == "wire-echo")
report("models/list_versions", models_list_versions.sync_detailed(
    client=client, body=ModelsListVersionsBody(model_id="wire-echo", models_pk_id=models_pk_id)))

mv = configured.model_version
step = {"ModelInference": {"models": [{"name": mv.name, "version": str(mv.file_info.version), "sha": mv.file_info.sha}]}}
created = report("pipelines/create", pipelines_create.sync_detailed(client=client, body=PipelinesCreateBody(
    pipeline_id="wire-pipe", workspace_id=1,
    definition=PipelinesCreateBodyDefinitionType0.from_dict({"steps": [step]}))))
report("pipelines/create 400", pipelines_create.sync_detailed(client=client, body=PipelinesCreateBody(
    pipeline_id="Not A Name", workspace_id=1)))
report("pipelines/create 401", pipelines_create.sync_detailed(client=stranger, body=PipelinesCreateBody(
    pipeline_id="wire-pipe", workspace_id=1)))

engine_config = {"engine": {"cpu": 0.5, "resources": {"limits": {"cpu": 0.5, "memory": "512Mi"},
                                                      "requests": {"cpu": 0.5, "memory": "512Mi"}}},
                 "enginelb": {}, "engineAux": {"images": {f"{mv.name}-{version_id}": {"env": [{"name": "SECRET_KEY", "value": "k"}]}}}}
deployed = report("pipelines/deploy", pipelines_deploy.sync_detailed(client=client, body=PipelinesDeployBody(
    deploy_id="wire-pipe", pipeline_version_pk_id=created.pipeline_variant_pk_id, engine_config=engine_config,
    models=[ModelVersionStub(name=mv.name, sha=mv.file_info.sha, version=mv.file_info.version)])))
deadline = time.monotonic() + 120
while True:
    status = status_get_deployment.sync_detailed(client=client, body=StatusGetDeploymentBody(name=f"wire-pipe-{deployed.id}"))
    if status.parsed is None or status.parsed.status.value != "Starting" or time.monotonic() > deadline:
        break
    time.sleep(0.5)
report("status/get_deployment", status)
report("pipelines/get_pipeline_by_name", get_pipeline_by_name.sync_detailed(
    client=client, body=GetPipelineByNameBody(pipeline_name="wire-pipe", workspace_id=1)))
report("pipelines/list_pipelines", list_pipelines.sync_detailed(client=client, body=ListPipelinesBody(workspace_id=1)))
report("pipelines/list_pipeline_versions", list_pipeline_versions.sync_detailed(
    client=client, body=ListPipelineVersionsBody(pipeline_id="wire-pipe", workspace_id=1)))
report("plateau/get_topic_name", plateau_get_topic_name.sync_detailed(
    client=client, body=PlateauGetTopicNameBody(pipeline_pk_id=created.pipeline_pk_id)))
report("pipelines/get_logs", pipelines_get_logs.sync_detailed(client=client, body=PipelinesGetLogsBody(
    pipeline_name="wire-pipe", workspace_id=1, order=PipelinesGetLogsBodyOrder.DESC, page_size=10)))
report("pipelines/get_logs 400", pipelines_get_logs.sync_detailed(client=client, body=PipelinesGetLogsBody(
    pipeline_name="wire-pipe", workspace_id=1, order=PipelinesGetLogsBodyOrder.ASC, start_time="2024-01-01T00:00:00Z")))
listener = {"monitored_pipeline": "wire-pipe", "listener_model": {"name": "toxicity"}, "window_seconds": 60}
once = report("task/run_once", oneshot.sync_detailed(client=client, body=OneshotRequest(
    json=OneshotRequestJson.from_dict(listener), orch_id=UUID(orch_id), workspace_id=1, name="wire-once", timeout=120)))
report("task/run_scheduled", cron_job.sync_detailed(client=client, body=CronJobBody(
    json=CronJobBodyJson.from_dict(listener), orch_id=UUID(orch_id), schedule="0 0 1 1 *", workspace_id=1)))
deadline = time.monotonic() + 120
while True:
    runs = list_task_runs.sync_detailed(client=client, body=ListTaskRunsRequest(task_id=once.id))
    if runs.parsed and runs.parsed[0].status.value != "running" or time.monotonic() > deadline:
        break
    time.sleep(0.5)
run = report("task/list_task_runs", runs)[0]
print(json.dumps({"run_status": run.status.value}), flush=True)
report("task/list_task_runs status", list_task_runs.sync_detailed(client=client, body=ListTaskRunsRequest(
    task_id=once.id, status=ListTaskRunsRequestStatus.FAILURE)))
report("task/get_run_details", get_run_details.sync_detailed(client=client, body=GetRunDetailsRequest(
    pod_id=run.run_id, task=once.id)))
report("task/get_logs_for_run", get_logs_for_run.sync_detailed(client=client, body=GetLogsForRunRequest(id=run.run_id)))
report("task/get_by_id", task_get_by_id.sync_detailed(client=client, body=GetTaskByIdRequest(id=once.id)))
report("task/list", task_list.sync_detailed(client=client, body=ListTasksRequest(workspace_id=1)))
report("task/kill", kill.sync_detailed(client=client, body=KillRequest(id=once.id)))
report("task/get_by_id 404", task_get_by_id.sync_detailed(client=client, body=GetTaskByIdRequest(id=uuid4())))

zipped = io.BytesIO()
with zipfile.ZipFile(zipped, "w") as zf:
    zf.writestr("main.py", "import time\ntime.sleep(600)\n")
uploaded = report("orchestration/upload", orchestration_upload.sync_detailed(client=client, body=OrchestrationUploadBody(
    file=File(payload=io.BytesIO(zipped.getvalue()), file_name="wire.zip", mime_type="application/octet-stream"),
    metadata=UploadOrchestrationRequest(workspace_id=1, name="wire-orch"))))
deadline = time.monotonic() + 120
while True:
    got = orchestration_get_by_id.sync_detailed(client=client, body=GetOrchestrationByIdRequest(id=uploaded.id))
    if got.parsed is None or got.parsed.status.value in ("ready", "error") or time.monotonic() > deadline:
        break
    time.sleep(0.25)
report("orchestration/get_by_id", got)
report("orchestration/list", orchestration_list.sync_detailed(client=client, body=ListOrchestrationsRequest(workspace_id=1)))
report("orchestration/list_all", orchestration_list_all.sync_detailed(client=client, body=ListAllOrchestrationsRequest(
    task_run_status=[], workspace_ids=[1])))
forever = report("task/run_continuously", network_service.sync_detailed(client=client, body=NetworkServiceRequest(
    json=NetworkServiceRequestJson.from_dict({"k": "v"}), name="wire-forever", orch_id=uploaded.id, workspace_id=1)))
kill.sync_detailed(client=client, body=KillRequest(id=forever.id))
report("orchestration/delete_orchestrations", delete_orchestrations.sync_detailed(
    client=client, body=DeleteOrchestrationsBody(orchestrations=[uploaded.id])))

report("pipelines/undeploy", pipelines_undeploy.sync_detailed(
    client=client, body=PipelinesUndeployBody(deployment_id=deployed.id)))
report("pipelines/delete_pipeline", delete_pipeline.sync_detailed(
    client=client, body=DeletePipelineBody(pipeline_id="wire-pipe", workspace_id=1)))
report("models/delete_model", delete_model.sync_detailed(
    client=client, body=DeleteModelBody(model_id="wire-echo", workspace_id=1)))

# every MLOps URL the generated client knows, so the test can check that each one we serve was called
api_dir = Path(models_upload_and_convert.__file__).parents[1]
urls = sorted({u for f in api_dir.rglob("*.py") for u in re.findall(r'"url": "([^"]+)"', f.read_text())})
print(json.dumps({"generated_urls": urls}), flush=True)
