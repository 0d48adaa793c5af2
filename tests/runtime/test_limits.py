"""Per-key limits and usage on a REAL runtime (loopback) with an LLM pipeline forwarding to the
OpenAI stand-in: a key over its request rate or its LLM token budget gets 429 with Retry-After
while other keys go on; usage (API, DataFrame, /metrics) matches the tokens the upstream reported."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, Server, make_model, server_env
from wallaroo_pulumi import BYOP_DIR, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA, DeploymentConfigBuilder, packaging
from wallaroo_pulumi.client import CreatedKey, WallarooClient
from wallaroo_pulumi.standins import OpenAIStandin
from wallaroo_pulumi.standins.base import echo_answer
from wallaroo_pulumi.standins.openai_server import last_user_text, prompt_token_count

JSON = "application/json; format=pandas-records"
KEY = "sk-limits-test"
PY = "3.9"


@dataclass
class Setup:
    server: Server
    admin: WallarooClient
    upstream: OpenAIStandin


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("limits")
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(OpenAIStandin(api_keys=[KEY], models=["gpt-4o-mini"]))
        srv = Server(root / "data", [], server_env()).start()
        stack.callback(srv.stop)
        admin = stack.enter_context(srv.client())
        double = admin.upload_model("lim-double", make_model(root, "lim-double", DOUBLE), X_SCHEMA, Y_SCHEMA,
                                    python_version=PY)
        plain = admin.create_pipeline("lim-pipe", steps=[double])
        admin.deploy("lim-pipe", pipeline_id=plain.pipeline_id, engine_config={"replica_count": 1})
        artifact = packaging.pack(BYOP_DIR / "openai_llm", root)
        llm = admin.upload_model("lim-llm", artifact.path, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA, python_version=PY)
        chat = admin.create_pipeline("lim-chat", steps=[llm])
        env = {"OPENAI_BASE_URL": upstream.openai_base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": "gpt-4o-mini"}
        admin.deploy("lim-chat", pipeline_id=chat.pipeline_id,
                     engine_config=DeploymentConfigBuilder().sidekick_env("lim-llm", env).build())
        admin.wait_for_deployment("lim-pipe", timeout_s=120)
        admin.wait_for_deployment("lim-chat", timeout_s=120)
        yield Setup(srv, admin, upstream)


def infer(setup: Setup, pipeline: str, token: str, body: list[dict]) -> httpx.Response:
    return httpx.post(f"{setup.server.url}/infer/{pipeline}", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": JSON})


def metric(setup: Setup, name: str, **labels: str) -> float:
    text = httpx.get(setup.server.url + "/metrics", headers=setup.server.headers).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}{{{re.escape(want)}}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_a_key_over_its_request_rate_gets_429_and_other_keys_do_not(setup: Setup) -> None:
    limited = setup.admin.create_key("rpm-3", "inference", pipelines=["lim-pipe"], requests_per_minute=3)
    other = setup.admin.create_key("free", "inference", pipelines=["lim-pipe"])
    token = limited.secret.get_secret_value()
    for _ in range(3):
        assert infer(setup, "lim-pipe", token, [{"x": 1.0}]).status_code == 200
    refused = infer(setup, "lim-pipe", token, [{"x": 1.0}])
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["Retry-After"]) <= 20  # one request comes back every 20 s
    body = refused.json()
    assert body["source"] == "limits" and "over its limit of 3 requests per minute" in body["error"]
    # other keys are unaffected, at the same moment
    assert infer(setup, "lim-pipe", other.secret.get_secret_value(), [{"x": 2.0}]).status_code == 200
    assert infer(setup, "lim-pipe", setup.server.token, [{"x": 2.0}]).status_code == 200
    assert metric(setup, "wallaroo_rate_limited_total", key_id=str(limited.key.id), limit="requests_per_minute") == 1
    # a refused request is not metered
    usage = setup.admin.usage(key_id=limited.key.id)
    assert usage[["requests", "rows"]].values.tolist() == [[3, 3]]


def test_token_budgets_and_usage_match_what_the_upstream_reported(setup: Setup) -> None:
    admin, upstream = setup.admin, setup.upstream
    upstream.stats.reset()
    budget = admin.create_key("tpm-20", "inference", pipelines=["lim-chat"], tokens_per_minute=20)
    metered = admin.create_key("metered", "inference", pipelines=["lim-chat"])
    sent: dict[str, str] = {}  # prompt -> key name

    def ask(key: CreatedKey, *prompts: str) -> httpx.Response:
        sent.update(dict.fromkeys(prompts, key.key.name))
        return infer(setup, "lim-chat", key.secret.get_secret_value(), [{"text": p} for p in prompts])

    first = ask(budget, "one two three four five six", "seven eight nine ten eleven twelve")
    assert first.status_code == 200, first.text
    assert all(row["out"]["error"] == "" for row in first.json())
    spent = sum(row["out"]["prompt_tokens"] + row["out"]["completion_tokens"] for row in first.json())
    assert spent > 20  # one call may overdraw; the next waits until the bucket refills
    refused = ask(budget, "never sent")
    assert refused.status_code == 429 and "over its limit of 20 LLM tokens per minute" in refused.json()["error"]
    assert int(refused.headers["Retry-After"]) >= 3
    del sent["never sent"]
    for prompt in ("alpha beta", "gamma delta epsilon", "zeta"):  # another key goes on
        assert ask(metered, prompt).status_code == 200

    # what the stand-in answered, recomputed by its own counting from the requests it recorded
    reported: dict[str, list[int]] = {"tpm-20": [0, 0], "metered": [0, 0]}
    calls = [r for r in upstream.stats.recent if r.path.endswith("/chat/completions")]
    assert len(calls) == 5 and upstream.stats.snapshot()["by_status"] == {"200": 5}
    for request in calls:
        messages, prompt = request.body["messages"], last_user_text(request.body["messages"])
        completion = echo_answer(prompt, request.body.get("max_tokens"))[1] * int(request.body.get("n") or 1)
        reported[sent[prompt]][0] += prompt_token_count(messages)
        reported[sent[prompt]][1] += completion

    usage = admin.usage(pipeline="lim-chat").set_index("key_name")
    for name, key, rows in (("tpm-20", budget, 2), ("metered", metered, 3)):
        prompt, completion = reported[name]
        assert usage.loc[name, ["requests", "rows", "prompt_tokens", "completion_tokens"]].tolist() == [
            1 if rows == 2 else 3, rows, prompt, completion]
        assert usage.loc[name, "total_tokens"] == prompt + completion
        labels = {"key_id": str(key.key.id), "key_name": name, "pipeline": "lim-chat"}
        assert metric(setup, "wallaroo_usage_prompt_tokens_total", **labels) == prompt
        assert metric(setup, "wallaroo_usage_completion_tokens_total", **labels) == completion
    by_pipeline = admin.usage(group_by=["pipeline"]).set_index("pipeline")
    assert by_pipeline.loc["lim-chat", "prompt_tokens"] == sum(v[0] for v in reported.values())
    hourly = admin.usage(key_id=metered.key.id, group_by=["hour"])
    assert len(hourly) == 1 and hourly["hour"].dt.tz is not None and hourly["requests"].tolist() == [3]


def test_refused_requests_add_no_metric_series_per_path(setup: Setup) -> None:
    """A request refused before routing (403 out of the key's scope, 429 over its rate) is counted
    under 'unmatched', not its raw path: a caller sending many distinct paths must not grow the
    metrics (every series is kept for the life of the process)."""
    scoped = setup.admin.create_key("scoped-paths", "inference", pipelines=["lim-pipe"], requests_per_minute=1000)
    token = scoped.secret.get_secret_value()

    def series() -> int:
        text = httpx.get(setup.server.url + "/metrics", headers=setup.server.headers).text
        return sum(1 for line in text.splitlines() if line.startswith("wallaroo_http_request"))

    infer(setup, "elsewhere-0", token, [{"x": 1.0}])  # the 'unmatched' series of this code, once
    series()  # and GET /metrics's own
    before = series()
    codes = {infer(setup, f"elsewhere-{i}", token, [{"x": 1.0}]).status_code for i in range(1, 41)}
    assert codes <= {403, 404} and codes, codes
    text = httpx.get(setup.server.url + "/metrics", headers=setup.server.headers).text
    assert "elsewhere-" not in text
    assert series() == before
