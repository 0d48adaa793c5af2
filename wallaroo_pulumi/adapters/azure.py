"""Azure as a BYOP model's upstream: an Azure OpenAI deployment (OpenAI chat body, ``api-key``
header) or an Azure ML online endpoint (model-catalog ``input_data`` body, ``text`` or ``chat`` style).

``AZURE_MODE`` picks one, else whichever of ``AZURE_OPENAI_ENDPOINT`` / ``AZUREML_SCORE_URL`` is set.
Azure ML answers are read as a string, ``["..."]``, ``{"output"|"0"|"generated_text": ...}`` or a
JSON-encoded string of any of these. Environment: ``components/byop/azure_llm/README.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from wallaroo_pulumi.adapters.chat import ChatCall, StreamDelta
from wallaroo_pulumi.adapters.config import AdapterConfigError, Env
from wallaroo_pulumi.adapters.http import (
    CommonSettings,
    HttpLLMAdapter,
    MalformedResponse,
    PreparedRequest,
    RowResult,
)
from wallaroo_pulumi.adapters.openai_chat import (
    call_body,
    chat_body,
    chat_messages,
    parse_chat_chunk,
    parse_chat_completion,
)
from wallaroo_pulumi.adapters.redact import Redactor

DEFAULT_AZURE_OPENAI_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(HttpLLMAdapter):
    name = "azure-openai"

    def __init__(
        self,
        settings: CommonSettings,
        *,
        endpoint: str,
        deployment: str,
        api_key: str,
        api_version: str = DEFAULT_AZURE_OPENAI_API_VERSION,
        system_prompt: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(settings, Redactor([api_key]))
        self.url = f"{endpoint.rstrip('/')}/openai/deployments/{deployment}/chat/completions"
        self.api_version = api_version
        self.system_prompt = system_prompt
        self.extra_body = dict(extra_body or {})
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", "api-key": api_key}

    def build_request(self, text: str) -> PreparedRequest:
        return PreparedRequest(
            url=self.url,
            json=chat_body(self.settings, self.system_prompt, text, self.extra_body, model=None),
            headers=self._headers,
            params={"api-version": self.api_version},
        )

    def parse_response(self, text: str, body: Any) -> RowResult:
        return parse_chat_completion(body, self.name)

    def build_chat_request(self, call: ChatCall, stream: bool) -> PreparedRequest:
        return PreparedRequest(
            url=self.url,
            json=call_body(self.settings, self.system_prompt, call, self.extra_body, None, stream),
            headers={**self._headers, "Accept": "text/event-stream"} if stream else self._headers,
            params={"api-version": self.api_version},
        )

    def parse_chat_response(self, call: ChatCall, body: Any) -> RowResult:
        return parse_chat_completion(body, self.name)

    def parse_stream_event(self, data: str) -> Iterator[StreamDelta]:
        return parse_chat_chunk(data, self.name)  # Azure's first event (prompt filter, no choices) adds nothing


class AzureMLAdapter(HttpLLMAdapter):
    name = "azureml"

    def __init__(
        self,
        settings: CommonSettings,
        *,
        score_url: str,
        api_key: str,
        deployment: str | None = None,
        body_style: str = "text",
        system_prompt: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(settings, Redactor([api_key]))
        if body_style not in ("text", "chat"):
            raise AdapterConfigError(f"azureml: body style {body_style!r} is not 'text' or 'chat'")
        self.score_url = score_url
        self.body_style = body_style
        self.system_prompt = system_prompt
        self.parameters = dict(parameters or {})
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {api_key}",
        }
        if deployment:
            self._headers["azureml-model-deployment"] = deployment

    def build_request(self, text: str) -> PreparedRequest:
        params: dict[str, Any] = {}
        if self.settings.max_tokens is not None:
            params["max_new_tokens"] = self.settings.max_tokens
        if self.settings.temperature is not None:
            params["temperature"] = self.settings.temperature
        params.update(self.parameters)
        input_string: list[Any]
        if self.body_style == "chat":
            input_string = chat_messages(self.system_prompt, text)
        else:
            input_string = [text]
        return PreparedRequest(
            url=self.score_url,
            json={"input_data": {"input_string": input_string, "parameters": params}},
            headers=self._headers,
        )

    def parse_response(self, text: str, body: Any) -> RowResult:
        return RowResult(azureml_text(body))


def azureml_text(body: Any) -> str:
    for _ in range(8):
        if isinstance(body, str):
            stripped = body.strip()
            if stripped[:1] in ("[", "{", '"'):
                try:
                    body = json.loads(stripped)
                    continue
                except json.JSONDecodeError:
                    pass
            return body
        if isinstance(body, list):
            if not body:
                raise MalformedResponse("the Azure ML answer is an empty list")
            body = body[0]
            continue
        if isinstance(body, dict):
            for key in ("output", "0", "generated_text", "result", "text"):
                if key in body:
                    body = body[key]
                    break
            else:
                raise MalformedResponse(
                    f"the Azure ML answer has none of output, 0, generated_text (keys: {', '.join(sorted(body))[:100]})"
                )
            continue
        break
    raise MalformedResponse(f"the Azure ML answer is {type(body).__name__}, expected text")


def azure_adapter_from_env(environ: Mapping[str, str] | None = None) -> HttpLLMAdapter:
    env = Env(environ, adapter="azure")
    mode = env.choice("AZURE_MODE", ("openai", "ml"), None)
    if mode is None:
        has_openai = env.raw("AZURE_OPENAI_ENDPOINT") is not None
        has_ml = env.raw("AZUREML_SCORE_URL") is not None
        if has_openai and has_ml:
            raise AdapterConfigError(
                "azure: both AZURE_OPENAI_ENDPOINT and AZUREML_SCORE_URL are set; set AZURE_MODE to 'openai' or 'ml' "
                "in the model's sidekick env to pick one."
            )
        if not (has_openai or has_ml):
            raise AdapterConfigError(
                "azure: neither AZURE_OPENAI_ENDPOINT (Azure OpenAI) nor AZUREML_SCORE_URL (Azure ML online endpoint) "
                "is set; set one of them in the model's sidekick env (e.g. `pulumi config set azureOpenaiEndpoint "
                "https://<resource>.openai.azure.com` and sidekick_env={'AZURE_OPENAI_ENDPOINT': ...})."
            )
        mode = "openai" if has_openai else "ml"
    settings = CommonSettings.from_env(env)
    if mode == "openai":
        endpoint = env.url("AZURE_OPENAI_ENDPOINT", "the resource URL, https://<resource>.openai.azure.com")
        assert endpoint is not None
        return AzureOpenAIAdapter(
            settings,
            endpoint=endpoint,
            deployment=env.require("AZURE_OPENAI_DEPLOYMENT", "the Azure OpenAI deployment name"),
            api_key=env.require(
                "AZURE_OPENAI_API_KEY", "the Azure OpenAI resource key", secret=True, config_key="azureOpenaiApiKey"
            ),
            api_version=env.str("AZURE_OPENAI_API_VERSION", DEFAULT_AZURE_OPENAI_API_VERSION) or DEFAULT_AZURE_OPENAI_API_VERSION,
            system_prompt=env.raw("SYSTEM_PROMPT"),
            extra_body=env.json_object("AZURE_OPENAI_EXTRA_BODY"),
        )
    score_url = env.url(
        "AZUREML_SCORE_URL", "the online endpoint's scoring URI, https://<endpoint>.<region>.inference.ml.azure.com/score"
    )
    assert score_url is not None
    return AzureMLAdapter(
        settings,
        score_url=score_url,
        api_key=env.require("AZUREML_API_KEY", "the online endpoint's key", secret=True, config_key="azuremlApiKey"),
        deployment=env.raw("AZUREML_DEPLOYMENT"),
        body_style=env.choice("AZUREML_BODY_STYLE", ("text", "chat"), "text") or "text",
        system_prompt=env.raw("SYSTEM_PROMPT"),
        parameters=env.json_object("AZUREML_PARAMETERS"),
    )
