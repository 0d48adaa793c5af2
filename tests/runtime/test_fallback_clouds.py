"""A Fallback across clouds through the REAL runtime: Vertex, then OpenAI, then Azure, each its own
sidekick with its own credentials, against local stand-ins that speak each cloud's wire protocol.
Rows fall through per row on the errors the step names, and the log says who answered each."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.runtime.conftest import Server
from wallaroo_pulumi import BYOP_DIR, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA, DeploymentConfigBuilder, packaging
from wallaroo_pulumi.standins import DEFAULT_AZURE_OPENAI_KEY, AzureStandin, OpenAIStandin, VertexStandin

KEY = "sk-fallback-test"
NO_RETRY = {"MAX_RETRIES": "0"}  # a failed call is the row's failure at once: the fallback is the retry


@pytest.fixture
def clouds() -> Iterator[tuple[VertexStandin, OpenAIStandin, AzureStandin]]:
    with VertexStandin() as vertex, OpenAIStandin(api_keys=[KEY], models=["gpt-4o-mini"]) as oai, AzureStandin() as azure:
        yield vertex, oai, azure


def test_vertex_falls_back_to_openai_then_azure_per_row(server: Server, client, clouds, tmp_path: Path) -> None:
    vertex, oai, azure = clouds
    envs = {
        "fb-vertex": {"APPLICATION_CREDENTIALS": json.dumps(vertex.create_service_account()),
                      "VERTEX_ENDPOINT_URL": vertex.endpoint_url, "VERTEX_API": "gemini", **NO_RETRY},
        "fb-openai": {"OPENAI_BASE_URL": oai.openai_base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": "gpt-4o-mini",
                      **NO_RETRY},
        "fb-azure": {"AZURE_OPENAI_ENDPOINT": azure.azure_openai_endpoint, "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini",
                     "AZURE_OPENAI_API_KEY": DEFAULT_AZURE_OPENAI_KEY, **NO_RETRY},
    }
    refs = []
    for name, folder in zip(envs, ("vertex_llm", "openai_llm", "azure_llm"), strict=True):
        mv = client.upload_model(name, packaging.pack(BYOP_DIR / folder, tmp_path).path, LLM_INPUT_SCHEMA,
                                 LLM_OUTPUT_SCHEMA, python_version="3.9")
        refs.append(mv.ref().model_dump(exclude_none=True))
    created = client.create_pipeline("fallback-clouds", steps=[{"Fallback": {"models": refs, "on": ["429", "5xx", "timeout"]}}])
    config = DeploymentConfigBuilder()
    for name, env in envs.items():
        config = config.sidekick_env(name, env)
    dep = client.deploy("fallback-clouds", pipeline_id=created.pipeline_id, engine_config=config.build())
    client.wait_for_deployment(f"fallback-clouds-{dep}", timeout_s=180)

    vertex.faults.server_error_next(4, 503)  # Vertex is down for every row
    oai.faults.rate_limit_next(1, retry_after=None)  # OpenAI throttles one row of them
    prompts = [f"prompt {i}" for i in range(4)]
    r = httpx.post(f"{server.url}/v1/api/pipelines/infer/fallback-clouds-{dep}/fallback-clouds", timeout=120,
                   headers={**server.headers, "Content-Type": "application/json; format=pandas-records"},
                   content=json.dumps([{"text": p} for p in prompts]))
    assert r.status_code == 200, r.text
    answers = r.json()
    assert [a["out"]["generated_text"] for a in answers] == [f"echo: {p}" for p in prompts]
    assert all(a["out"]["error"] == "" for a in answers)
    who = Counter(json.loads(a["out"]["_model_split"][0])["name"] for a in answers)
    assert who == {"fb-openai": 3, "fb-azure": 1}, who
    assert vertex.stats.snapshot()["by_status"].get("503") == 4
    assert oai.stats.snapshot()["by_status"] == {"429": 1, "200": 3}

    # with Vertex back, every row is Vertex's; the log says who answered each call's rows
    r = httpx.post(f"{server.url}/v1/api/pipelines/infer/fallback-clouds-{dep}/fallback-clouds", timeout=120,
                   headers={**server.headers, "Content-Type": "application/json; format=pandas-records"},
                   content=json.dumps([{"text": "vertex is back"}]))
    assert r.status_code == 200 and json.loads(r.json()[0]["out"]["_model_split"][0])["name"] == "fb-vertex"
    logs = client.logs("fallback-clouds", limit=10)
    logged = Counter(json.loads(v[0])["name"] for v in logs["out._model_split"])
    assert logged == {"fb-openai": 3, "fb-azure": 1, "fb-vertex": 1}
    with contextlib.suppress(Exception):
        client.delete_pipeline("fallback-clouds")
