"""Guardrail policies on a REAL runtime, between the caller and an OpenAI stand-in that records what it
receives: PII masked before the upstream sees it (or the call refused), a toxic answer refused or
replaced on the validator's score, keyword, pattern and topic lists, streamed answers cut when a
policy fires, refusals in Wallaroo's and in OpenAI's error shapes, what each policy did in the logs
and in /metrics; and nothing refused where no policy says so."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.runtime.conftest import Server, server_env
from wallaroo_pulumi import BYOP_DIR, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA, DeploymentConfigBuilder, packaging
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.scorers.schemas import listener_schemas
from wallaroo_pulumi.standins import OpenAIStandin

KEY = "sk-guardrails-test"
JSON = "application/json; format=pandas-records"
PII = "mail jo.doe@example.com, card 4111 1111 1111 1111, call +1 415-555-0132"
TOXIC = "you are a stupid idiot and i fucking hate you"


@dataclass
class Setup:
    server: Server
    admin: WallarooClient
    upstream: OpenAIStandin
    urls: dict[str, str]

    def infer(self, pipeline: str, text: str) -> httpx.Response:
        return httpx.post(self.urls[pipeline], content=json.dumps([{"text": text}]), timeout=60,
                          headers={**self.server.headers, "Content-Type": JSON})

    def openai(self, pipeline: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.urls[pipeline]}/openai/v1", api_key=self.server.token, max_retries=0, timeout=60)

    def guardrails(self, pipeline: str, spec: dict | None) -> httpx.Response:
        return httpx.post(f"{self.server.url}/v1/api/pipelines/set_guardrails", headers=self.server.headers, timeout=30,
                          json={"pipeline_id": pipeline, "workspace_id": 1, "guardrails": spec})

    def sent_upstream(self) -> list[str]:
        """The message texts the stand-in received, oldest first."""
        return [m["content"] for r in self.upstream.stats.recent if r.path.endswith("/chat/completions")
                for m in r.body["messages"]]

    def latest_log(self, pipeline: str) -> dict:
        logs = httpx.post(f"{self.server.url}/v1/api/pipelines/get_logs", headers={**self.server.headers, "Accept": JSON},
                          json={"pipeline_name": pipeline, "workspace_id": 1, "order": "Desc", "page_size": 1}, timeout=30)
        return logs.json()[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("guardrails")
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(OpenAIStandin(api_keys=[KEY], models=["gpt-4o-mini"]))
        srv = Server(root / "data", [], server_env()).start()
        stack.callback(srv.stop)
        admin = stack.enter_context(srv.client())
        llm = admin.upload_model("openai-llm", packaging.pack(BYOP_DIR / "openai_llm", root).path,
                                 LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA, python_version="3.9")
        httpx.post(f"{srv.url}/v1/api/models/insert_model_config", headers=srv.headers, timeout=30,
                   json={"model_version_id": llm.id, "openai_config": {"enabled": True}}).raise_for_status()
        vin, vout = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
        validator = admin.upload_model("validator", packaging.pack(BYOP_DIR / "listeners" / "validator", root).path,
                                       vin, vout, python_version="3.9")
        env = {"OPENAI_BASE_URL": upstream.openai_base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": "gpt-4o-mini"}
        urls = {}
        for name, steps in (("guarded", [llm, validator]), ("plain", [llm])):
            created = admin.create_pipeline(name, steps=steps)
            dep = admin.deploy(name, pipeline_id=created.pipeline_id,
                               engine_config=DeploymentConfigBuilder().sidekick_env("openai-llm", env).build())
            admin.wait_for_deployment(f"{name}-{dep}", timeout_s=180)
            urls[name] = f"{srv.url}/v1/api/pipelines/infer/{name}-{dep}/{name}"
        yield Setup(srv, admin, upstream, urls)


@pytest.fixture(autouse=True)
def fresh(setup: Setup) -> Iterator[None]:
    """Each test sets the policies it needs; the upstream echoes unless a test says otherwise."""
    yield
    setup.upstream.responder = None
    for pipeline in setup.urls:
        assert setup.guardrails(pipeline, None).status_code == 200


def test_nothing_is_refused_or_changed_without_a_policy(setup: Setup) -> None:
    setup.upstream.responder = lambda _prompt: TOXIC
    for pipeline in ("guarded", "plain"):
        answer = setup.infer(pipeline, f"{PII}, competitor acme corp")
        assert answer.status_code == 200, answer.text
        assert answer.json()[0]["out"]["generated_text"] == TOXIC
        assert setup.sent_upstream()[-1] == f"{PII}, competitor acme corp"
        assert "guardrails" not in setup.latest_log(pipeline)["metadata"]
    assert setup.infer("guarded", "x").json()[0]["out"]["toxicity"] > 0.5  # the score was there, nobody acted on it


def test_pii_is_masked_before_the_upstream_sees_it(setup: Setup) -> None:
    assert setup.guardrails("guarded", {"policies": [{"kind": "pii", "name": "no-pii", "action": "mask"}]}).status_code == 200
    answer = setup.infer("guarded", f"{PII}, bad card 4111 1111 1111 1112")
    assert answer.status_code == 200, answer.text
    masked = "mail <EMAIL_ADDRESS>, card <CREDIT_CARD>, call <PHONE_NUMBER>, bad card 4111 1111 1111 1112"
    assert setup.sent_upstream()[-1] == masked  # the checksum-failing number is not a card
    assert answer.json()[0]["out"]["generated_text"] == f"echo: {masked}"
    logged = setup.latest_log("guarded")
    assert logged["in"]["text"] == masked and "jo.doe" not in json.dumps(logged)
    did = json.loads(logged["metadata"]["guardrails"])
    assert [(d["policy"], d["side"], d["field"], d["action"]) for d in did] == [("no-pii", "request", "text", "masked")]
    assert "EMAIL_ADDRESS" in did[0]["found"] and "CREDIT_CARD" in did[0]["found"]

    chat = setup.openai("guarded").chat.completions.create(
        model="", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "I am jo.doe@example.com"}])
    assert setup.sent_upstream()[-2:] == ["be brief", "I am <EMAIL_ADDRESS>"]
    assert chat.choices[0].message.content == "echo: I am <EMAIL_ADDRESS>"
    metrics = httpx.get(setup.server.url + "/metrics", headers=setup.server.headers).text
    assert 'wallaroo_guardrail_actions_total{action="masked",pipeline="guarded",policy="no-pii",side="request"} 2.0' in metrics


def test_pii_refused_when_so_configured(setup: Setup) -> None:
    setup.guardrails("guarded", {"policies": [{"kind": "pii", "name": "pii-stop", "action": "refuse", "on": ["request"]}]})
    before = setup.upstream.stats.requests
    refused = setup.infer("guarded", "my iban is GB82 WEST 1234 5698 7654 32")
    assert refused.status_code == 400
    body = refused.json()
    assert body["policy"] == "pii-stop" and body["field"] == "text" and body["source"] == "guardrail"
    assert "IBAN_CODE" in body["msg"] and "GB82" not in body["msg"]
    assert setup.upstream.stats.requests == before  # it never left
    logged = setup.latest_log("guarded")
    assert logged["in"]["text"] == "my iban is <IBAN_CODE>" and logged["metadata"]["error"].startswith("400: guardrail")

    with pytest.raises(openai.BadRequestError) as bad:
        setup.openai("guarded").chat.completions.create(model="", messages=[{"role": "user", "content": "ssn 536-90-4399"}])
    assert bad.value.body["param"] == "messages[0].content" and bad.value.body["code"] == "guardrail_refused"
    assert "pii-stop" in bad.value.body["message"] and setup.upstream.stats.requests == before
    metrics = httpx.get(setup.server.url + "/metrics", headers=setup.server.headers).text
    assert 'wallaroo_guardrail_actions_total{action="refused",pipeline="guarded",policy="pii-stop",side="request"} 2.0' in metrics
    assert 'wallaroo_inference_requests_total{outcome="refused",pipeline="guarded"} 2.0' in metrics  # not errors


def test_a_toxic_answer_is_refused_or_replaced(setup: Setup) -> None:
    setup.upstream.responder = lambda prompt: TOXIC if "insult" in prompt else "glad to help"
    setup.guardrails("guarded", {"policies": [{"kind": "threshold", "name": "toxic", "score": "toxicity", "above": 0.5}]})
    assert setup.infer("guarded", "be kind").json()[0]["out"]["generated_text"] == "glad to help"
    refused = setup.infer("guarded", "insult me")
    assert refused.status_code == 400 and refused.json()["policy"] == "toxic" and refused.json()["field"] == "toxicity"
    with pytest.raises(openai.BadRequestError) as bad:
        setup.openai("guarded").chat.completions.create(model="", messages=[{"role": "user", "content": "insult me"}])
    assert bad.value.body["param"] == "toxicity" and "'toxic' refused the answer" in bad.value.body["message"]

    setup.guardrails("guarded", {"policies": [{"kind": "threshold", "name": "toxic", "score": "toxicity", "above": 0.5,
                                               "action": "replace", "message": "(answer withheld)"}]})
    replaced = setup.infer("guarded", "insult me").json()[0]["out"]
    assert replaced["generated_text"] == "(answer withheld)" and replaced["toxicity"] > 0.5 and replaced["error"] == ""
    chat = setup.openai("guarded").chat.completions.create(model="", messages=[{"role": "user", "content": "insult me"}])
    assert chat.choices[0].message.content == "(answer withheld)"


def test_a_streamed_answer_is_cut_when_it_crosses_the_threshold(setup: Setup) -> None:
    setup.upstream.responder = lambda _prompt: f"well here is what i think of your question today: {TOXIC}"
    setup.guardrails("guarded", {"policies": [{"kind": "threshold", "name": "toxic", "score": "toxicity", "above": 0.5}],
                                 "check_every": 3})
    chunks = list(setup.openai("guarded").chat.completions.create(
        model="", messages=[{"role": "user", "content": "go"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("well here is") and "idiot" not in text and "hate" not in text
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert last.choices[0].finish_reason == "content_filter"
    event = (last.model_extra or {})["wallaroo"]["guardrail"]
    assert event["policy"] == "toxic" and event["action"] == "refused" and "stream cut after" in event["found"]
    assert setup.latest_log("guarded")["metadata"]["error"].startswith("400: guardrail policy 'toxic'")

    setup.upstream.responder = lambda _prompt: "a calm and friendly answer"
    calm = list(setup.openai("guarded").chat.completions.create(model="", messages=[{"role": "user", "content": "go"}],
                                                                stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in calm if c.choices) == "a calm and friendly answer"
    assert [c.choices[0].finish_reason for c in calm if c.choices][-1] == "stop"


def test_a_buffered_stream_is_checked_whole_and_masked(setup: Setup) -> None:
    setup.upstream.responder = lambda _prompt: "write to jo.doe@example.com for the refund"
    setup.guardrails("guarded", {"policies": [{"kind": "pii", "name": "no-pii", "on": ["response"]}], "streaming": "buffer"})
    chunks = list(setup.openai("guarded").chat.completions.create(
        model="", messages=[{"role": "user", "content": "who?"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "write to <EMAIL_ADDRESS> for the refund"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    setup.upstream.responder = lambda _prompt: f"a long and calm start before it turns: {TOXIC}"
    setup.guardrails("guarded", {"policies": [{"kind": "threshold", "name": "toxic", "score": "toxicity", "above": 0.5}],
                                 "streaming": "buffer"})
    chunks = list(setup.openai("guarded").chat.completions.create(
        model="", messages=[{"role": "user", "content": "go"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""  # nothing went out
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"


def test_keyword_pattern_and_topic_lists(setup: Setup) -> None:
    setup.guardrails("plain", {"policies": [
        {"kind": "keywords", "name": "competitors", "blocked": ["Acme Corp"], "on": ["request"]},
        {"kind": "keywords", "name": "codes", "patterns": [r"PRJ-\d{4}"], "action": "mask"},
        {"kind": "keywords", "name": "billing-only", "allowed_topics": {"billing": ["invoice", "refund"]}, "on": ["request"]},
    ]})
    refused = setup.infer("plain", "is ACME corp cheaper for my invoice?").json()
    assert refused["policy"] == "competitors" and "'ACME corp'" in refused["msg"]
    assert setup.infer("plain", "is acme corporation cheaper for my invoice?").status_code == 200  # whole words only
    masked = setup.infer("plain", "refund for project PRJ-1234 please").json()[0]
    assert masked["in"]["text"] == "refund for project [REDACTED] please"
    assert setup.sent_upstream()[-1] == "refund for project [REDACTED] please"
    off_topic = setup.infer("plain", "tell me a joke").json()
    assert off_topic["policy"] == "billing-only" and "none of the allowed topics (billing)" in off_topic["msg"]


def test_bad_policies_are_refused_naming_the_field(setup: Setup) -> None:
    bad = setup.guardrails("plain", {"policies": [{"kind": "keywords", "name": "x", "patterns": ["(unclosed"]}]})
    assert bad.status_code == 400 and "guardrails.policies.0.keywords" in bad.json()["msg"] and "(unclosed" in bad.json()["msg"]
    bad = setup.guardrails("plain", {"policies": [{"kind": "threshold", "name": "t", "score": "toxicity", "above": 0.5,
                                                   "action": "replace"}]})
    assert bad.status_code == 400 and "needs a message" in bad.json()["msg"]
    bad = setup.guardrails("plain", {"policies": [{"kind": "pii", "name": "p", "entities": ["SHOE_SIZE"]}]})
    assert bad.status_code == 400 and "entities" in bad.json()["msg"]
    got = httpx.post(f"{setup.server.url}/v1/api/pipelines/get_guardrails", headers=setup.server.headers,
                     json={"pipeline_id": "plain", "workspace_id": 1}).json()
    assert got == {"pipeline_id": "plain", "workspace_id": 1, "guardrails": None}
