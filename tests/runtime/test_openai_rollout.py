"""The OpenAI-compatible endpoints follow a pipeline's split, shadow and fallback on a REAL runtime
(loopback), called with the official `openai` client, streamed and not. Two LLM models, each its
own sidekick against its own cloud stand-in (OpenAI, Azure OpenAI), so the stand-ins' request
counts say who was called, and the log's `out._model_split` who answered."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.runtime.conftest import Server
from wallaroo_pulumi import BYOP_DIR, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA, DeploymentConfigBuilder, packaging
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.standins import DEFAULT_AZURE_OPENAI_KEY, AzureStandin, OpenAIStandin

KEY = "sk-openai-rollout-test"
ENABLED = {"enabled": True, "chat_completion_config": {"max_tokens": 64}}
NO_RETRY = {"MAX_RETRIES": "0"}  # a failed upstream call is the row's failure at once: the fallback is the retry


@dataclass
class Clouds:
    server: Server
    client: WallarooClient
    oai: OpenAIStandin
    azure: AzureStandin
    refs: dict[str, dict]  # model name -> {name, version, sha}

    def deploy(self, name: str, steps: list[dict]) -> openai.OpenAI:
        created = self.client.create_pipeline(name, steps=steps)
        config = (DeploymentConfigBuilder()
                  .sidekick_env("oai-llm", {"OPENAI_BASE_URL": self.oai.openai_base_url, "OPENAI_API_KEY": KEY,
                                            "OPENAI_MODEL": "gpt-4o-mini", **NO_RETRY})
                  .sidekick_env("azure-llm", {"AZURE_OPENAI_ENDPOINT": self.azure.azure_openai_endpoint,
                                              "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini",
                                              "AZURE_OPENAI_API_KEY": DEFAULT_AZURE_OPENAI_KEY, **NO_RETRY}))
        dep = self.client.deploy(name, pipeline_id=created.pipeline_id, engine_config=config.build())
        self.client.wait_for_deployment(f"{name}-{dep}", timeout_s=180)
        return openai.OpenAI(base_url=f"{self.server.url}/v1/api/pipelines/infer/{name}-{dep}/{name}/openai/v1",
                             api_key=self.server.token, max_retries=0, timeout=60)

    def calls(self) -> dict[str, int]:
        """Chat calls each stand-in has answered so far."""
        return {"oai-llm": self.oai.stats.snapshot()["requests"], "azure-llm": self.azure.stats.snapshot()["requests"]}


@pytest.fixture(scope="module")
def clouds(server: Server, client: WallarooClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clouds]:
    root: Path = tmp_path_factory.mktemp("openai-rollout")
    with OpenAIStandin(api_keys=[KEY], models=["gpt-4o-mini"]) as oai, AzureStandin() as azure:
        refs = {}
        for name, folder in (("oai-llm", "openai_llm"), ("azure-llm", "azure_llm")):
            mv = client.upload_model(name, packaging.pack(BYOP_DIR / folder, root).path, LLM_INPUT_SCHEMA,
                                     LLM_OUTPUT_SCHEMA, python_version="3.9")
            r = httpx.post(f"{server.url}/v1/api/models/insert_model_config", headers=server.headers, timeout=30,
                           json={"model_version_id": mv.id, "openai_config": ENABLED})
            assert r.status_code == 200, r.text
            refs[name] = mv.ref().model_dump(exclude_none=True)
        yield Clouds(server, client, oai, azure, refs)


def streamed(client: openai.OpenAI, content: str, **kwargs: object) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(model="", messages=[{"role": "user", "content": content}],
                                                 stream=True, **kwargs))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def whole(client: openai.OpenAI, content: str, **kwargs: object) -> str:
    answer = client.chat.completions.create(model="", messages=[{"role": "user", "content": content}], **kwargs)
    return answer.choices[0].message.content or ""


def served(logs) -> list[str]:  # noqa: ANN001 - a DataFrame, newest first
    return [json.loads(v[0])["name"] for v in logs["out._model_split"]]


def test_a_split_picks_one_model_per_call_sticky_by_the_user_field(clouds: Clouds) -> None:
    client = clouds.deploy("oai-split", [{"RandomSplit": {"hash_key": "user", "weights": [
        {"model": clouds.refs["oai-llm"], "weight": 1}, {"model": clouds.refs["azure-llm"], "weight": 1}]}}])
    users = [f"user-{i}" for i in range(16)]
    before = clouds.calls()
    for user in users:
        assert whole(client, f"hi {user}", user=user) == f"echo: hi {user}"
        assert streamed(client, f"again {user}", user=user)[0] == f"echo: again {user}"
    logs = clouds.client.logs("oai-split", limit=100)
    assert len(logs) == 2 * len(users)
    by_user: dict[str, set[str]] = {}
    for text, model in zip(logs["in.text"], served(logs), strict=True):
        by_user.setdefault(re.search(r"user-\d+", text).group(), set()).add(model)
    # streamed or not, one model per user
    assert len(by_user) == len(users) and all(len(models) == 1 for models in by_user.values()), by_user
    counts = Counter(served(logs))
    assert set(counts) == {"oai-llm", "azure-llm"}, counts  # 16 users at 1:1: both get some (fails 1 in 32,768)
    after = clouds.calls()
    assert {m: after[m] - before[m] for m in after} == dict(counts)  # each call went to the one model logged
    # a listener's scores name the model that served each scored call, so they compare per model
    task = post(clouds.server, "/v1/api/task/run_once", {"name": "oai-split-once", "workspace_id": 1, "json": {
        "monitored_pipeline": "oai-split", "listener_model": {"name": "combined"}}})
    deadline = time.monotonic() + 120
    while not (runs := post(clouds.server, "/v1/api/task/list_task_runs", {"task_id": task["id"]})) \
            or runs[0]["status"] == "running":
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)
    assert runs[0]["status"] == "success" and runs[0]["rows_scored"] == 2 * len(users), runs
    scores = clouds.client.logs("oai-split-combined-scores", limit=100)
    assert Counter(json.loads(m)["name"] for m in scores["in.source_model"]) == counts
    clouds.client.delete_pipeline("oai-split")


def post(server: Server, path: str, body: dict) -> dict | list:
    r = httpx.post(server.url + path, headers=server.headers, json=body, timeout=60)
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_a_shadow_streams_the_champion_and_logs_the_challenger(clouds: Clouds) -> None:
    client = clouds.deploy("oai-shadow", [{"ModelInference": {"models": [clouds.refs["oai-llm"], clouds.refs["azure-llm"]]}},
                                          {"AuditResults": {"from": 1, "to": None}}, {"MultiOut": {}}])
    clouds.azure.faults.set_token_interval(0.1)  # the challenger is slower: its answer still reaches the log
    try:
        before = clouds.calls()
        text, chunks = streamed(client, "shadowed call")
        assert whole(client, "shadowed whole") == "echo: shadowed whole"
    finally:
        clouds.azure.faults.set_token_interval(0)
    assert text == "echo: shadowed call"
    assert all("azure" not in json.dumps(c.model_dump()) for c in chunks)  # nothing of the challenger streamed
    after = clouds.calls()
    assert {m: after[m] - before[m] for m in after} == {"oai-llm": 2, "azure-llm": 2}  # every call to both
    logs = clouds.client.logs("oai-shadow", limit=10)
    assert logs["out.generated_text"].tolist() == ["echo: shadowed whole", "echo: shadowed call"]
    assert logs["out_azure-llm.generated_text"].tolist() == ["echo: shadowed whole", "echo: shadowed call"]
    assert "out._model_split" not in logs.columns
    clouds.client.delete_pipeline("oai-shadow")


def test_a_fallback_falls_through_before_the_first_chunk_and_the_log_says_who_answered(clouds: Clouds) -> None:
    client = clouds.deploy("oai-fallback", [{"Fallback": {"models": [clouds.refs["azure-llm"], clouds.refs["oai-llm"]],
                                                           "on": ["429", "5xx"]}}])
    clouds.azure.faults.server_error_next(2, 503)  # the primary fails the next two calls
    try:
        assert streamed(client, "azure is down")[0] == "echo: azure is down"
        assert whole(client, "still down") == "echo: still down"
        assert streamed(client, "azure is back")[0] == "echo: azure is back"
    finally:
        clouds.azure.faults.clear()
    logs = clouds.client.logs("oai-fallback", limit=10)
    assert served(logs) == ["azure-llm", "oai-llm", "oai-llm"]  # newest first
    assert (logs["out.error"].fillna("") == "").all()
    assert clouds.azure.stats.snapshot()["by_status"].get("503") == 2

    # a primary that fails in a way the step does not name (401) is the call's answer: no fall through
    clouds.azure.faults.server_error_next(1, 401)
    try:
        with pytest.raises(openai.APIError, match="401"):
            streamed(client, "bad key")
    finally:
        clouds.azure.faults.clear()
    deadline = time.monotonic() + 10
    while len(logs := clouds.client.logs("oai-fallback", limit=10)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served(logs)[0] == "azure-llm" and "401" in logs["out.error"].iloc[0]
    with contextlib.suppress(Exception):
        clouds.client.delete_pipeline("oai-fallback")
