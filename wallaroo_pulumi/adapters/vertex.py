"""Google Vertex AI online-prediction endpoints as a BYOP model's upstream.
With ``VERTEX_API=gemini`` the endpoint serves Gemini: ``:generateContent``, and a row's chat call
streamed from ``:streamGenerateContent?alt=sse`` (server-sent ``GenerateContentResponse`` chunks).

``POST {VERTEX_ENDPOINT_URL}:predict`` with ``{"instances": [{"prompt", "max_tokens", ...}]}`` and a
service-account OAuth2 token (google-auth; cached, refreshed under a lock, once more on a 401).
Environment: ``components/byop/vertex_llm/README.md``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import google.auth.exceptions
import requests
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2 import service_account

from wallaroo_pulumi.adapters.chat import ChatCall, StreamDelta, content_text
from wallaroo_pulumi.adapters.config import AdapterConfigError, Env
from wallaroo_pulumi.adapters.http import (
    CommonSettings,
    CredentialError,
    HttpLLMAdapter,
    MalformedResponse,
    PreparedRequest,
    RowResult,
    usage_int,
)
from wallaroo_pulumi.adapters.redact import Redactor

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_ENDPOINT_RE = re.compile(r"^https?://[^/]+/v1(?:beta1)?/projects/[^/]+/locations/[^/]+/endpoints/[^/:]+$")
_PREDICTION_KEYS = ("content", "generated_text", "text", "output", "prediction", "predictions")


def parse_service_account_info(raw: str, variable: str = "APPLICATION_CREDENTIALS") -> dict[str, Any]:
    """The service-account key from its JSON text, or from the ``str(dict)`` form
    (single quotes) that ``str(json.load(open("credentials.json")))`` produces.

    Error messages never repeat the value: it holds a private key.
    """
    text = raw.strip()
    info: Any
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        try:
            info = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise AdapterConfigError(
                f"vertex: environment variable {variable} is neither JSON nor a Python dict literal; expected the "
                "service-account key file's content (e.g. `pulumi config set --secret vertexCredentials < key.json`)."
            ) from None
    if isinstance(info, str):  # JSON-encoded twice
        return parse_service_account_info(info, variable)
    if not isinstance(info, dict):
        raise AdapterConfigError(
            f"vertex: environment variable {variable} holds a {type(info).__name__}; expected a service-account key object."
        )
    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if missing:
        raise AdapterConfigError(
            f"vertex: the service-account key in {variable} lacks {', '.join(missing)}; "
            "expected a key file downloaded for a service account (type 'service_account')."
        )
    if info.get("type", "service_account") != "service_account":
        raise AdapterConfigError(
            f"vertex: the credentials in {variable} have type {info.get('type')!r}; expected 'service_account'."
        )
    return info


def _credentials_from_env(env: Env) -> tuple[dict[str, Any], str]:
    raw = env.raw("APPLICATION_CREDENTIALS")
    if raw is not None:
        return parse_service_account_info(raw, "APPLICATION_CREDENTIALS"), "APPLICATION_CREDENTIALS"
    google = env.raw("GOOGLE_APPLICATION_CREDENTIALS")
    if google is not None:
        g = google.strip()
        if g.startswith("{"):
            return parse_service_account_info(g, "GOOGLE_APPLICATION_CREDENTIALS"), "GOOGLE_APPLICATION_CREDENTIALS"
        if os.path.isfile(g):
            with open(g, encoding="utf-8") as fh:
                return parse_service_account_info(fh.read(), "GOOGLE_APPLICATION_CREDENTIALS"), g
        raise AdapterConfigError(
            "vertex: GOOGLE_APPLICATION_CREDENTIALS is neither a service-account key nor a readable file path; "
            "set APPLICATION_CREDENTIALS to the key file's content instead."
        )
    env.require(
        "APPLICATION_CREDENTIALS",
        "the Google service-account key JSON (the content of the key file, not its path)",
        secret=True,
        config_key="vertexCredentials",
    )
    raise AssertionError("unreachable")


def strip_prompt_echo(prediction: str, prompt: str) -> str:
    """Drop the ``Prompt:\\n<prompt>\\nOutput:\\n`` echo vLLM-on-Vertex puts before the answer."""
    exact = f"Prompt:\n{prompt}\nOutput:\n"
    if prediction.startswith(exact):
        return prediction[len(exact) :]
    if prediction.startswith("Prompt:") and "Output:\n" in prediction:
        return prediction.split("Output:\n")[-1]  # what Wallaroo's Vertex tutorial does
    return prediction


def first_prediction_text(body: Any) -> str:
    if not isinstance(body, dict) or "predictions" not in body:
        raise MalformedResponse("no 'predictions' in the Vertex response")
    pred: Any = body["predictions"]
    if isinstance(pred, list):
        if not pred:
            raise MalformedResponse("'predictions' is empty")
        pred = pred[0]
    for _ in range(8):
        if isinstance(pred, str):
            return pred
        if isinstance(pred, list):
            if not pred:
                raise MalformedResponse("the first prediction is an empty list")
            pred = pred[0]
            continue
        if isinstance(pred, dict):
            for key in _PREDICTION_KEYS:
                if key in pred:
                    pred = pred[key]
                    break
            else:
                raise MalformedResponse(
                    f"prediction object has none of {', '.join(_PREDICTION_KEYS)} (keys: {', '.join(sorted(pred))[:100]})"
                )
            continue
        break
    raise MalformedResponse(f"prediction is {type(pred).__name__}, expected text")


VERTEX_APIS = ("predict", "gemini")
#: Gemini's finish reasons in OpenAI's names (the others, e.g. SAFETY, are content filters).
GEMINI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "FINISH_REASON_UNSPECIFIED": "", "OTHER": "stop",
                 "MALFORMED_FUNCTION_CALL": "stop"}


def gemini_body(call: ChatCall, max_tokens: int | None, temperature: float | None,
                parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """A chat call as a `generateContent` body: system messages become ``systemInstruction``,
    assistant turns ``model`` turns, OpenAI's sampling parameters ``generationConfig``."""
    system = [content_text(m.get("content")) for m in call.messages if m.get("role") in ("system", "developer")]
    contents = [{"role": "model" if m.get("role") == "assistant" else "user", "parts": [{"text": content_text(m.get("content"))}]}
                for m in call.messages if m.get("role") not in ("system", "developer")]
    config: dict[str, Any] = dict(parameters or {})
    limit = call.max_tokens if call.max_tokens is not None else max_tokens
    if limit is not None:
        config["maxOutputTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("presence_penalty", "presencePenalty"),
                         ("frequency_penalty", "frequencyPenalty"), ("seed", "seed")):
        if ours in call.params:
            config[theirs] = call.params[ours]
    if "temperature" not in config and temperature is not None:
        config["temperature"] = temperature
    if call.stop_sequences():
        config["stopSequences"] = call.stop_sequences()
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n".join(system)}]}
    if config:
        body["generationConfig"] = config
    return body


def parse_gemini(body: Any, final: bool = True) -> RowResult:
    """A `GenerateContentResponse` (or one streamed chunk): its first candidate's text, finish reason
    in OpenAI's names, and token counts."""
    if not isinstance(body, dict):
        raise MalformedResponse(f"expected a GenerateContentResponse object, got {type(body).__name__}")
    if isinstance(body.get("error"), dict):
        raise MalformedResponse(f"Gemini sent an error: {body['error'].get('message')}")
    usage = body.get("usageMetadata") if isinstance(body.get("usageMetadata"), dict) else {}
    prompt_tokens = usage_int(usage.get("promptTokenCount"))
    completion_tokens = usage_int(usage.get("candidatesTokenCount"))
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        blocked = (body.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            return RowResult("", prompt_tokens, completion_tokens, f"vertex: prompt blocked ({blocked})", "content_filter")
        if final:
            raise MalformedResponse("no 'candidates' in the Gemini response")
        return RowResult("", prompt_tokens, completion_tokens)
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict) and not p.get("thought"))
    reason = candidate.get("finishReason")
    finish = GEMINI_FINISH.get(reason, "content_filter") if reason else ""
    return RowResult(text, prompt_tokens, completion_tokens, "", finish)


class VertexAIAdapter(HttpLLMAdapter):
    name = "vertex"

    def __init__(
        self,
        settings: CommonSettings,
        *,
        service_account_info: Mapping[str, Any],
        endpoint_url: str,
        instance_params: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
        strip_prompt: bool = True,
        api: str = "predict",
    ) -> None:
        if api not in VERTEX_APIS:
            raise AdapterConfigError(f"vertex: VERTEX_API={api!r} is not one of {', '.join(VERTEX_APIS)}")
        self.api = api
        info = dict(service_account_info)
        super().__init__(settings, Redactor([info.get("private_key"), info.get("private_key_id")]))
        try:
            self._creds = service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_PLATFORM_SCOPE])
        except (ValueError, TypeError, KeyError) as exc:
            raise AdapterConfigError(
                self.redact(f"vertex: the service-account key could not be loaded ({type(exc).__name__}: {exc}); "
                            "check that APPLICATION_CREDENTIALS holds an unmodified key file")
            ) from None
        endpoint_url = endpoint_url.rstrip("/")
        if endpoint_url.endswith(":predict"):
            endpoint_url = endpoint_url[: -len(":predict")]
        self.endpoint_url = endpoint_url
        self.instance_params = dict(instance_params or {})
        self.parameters = dict(parameters) if parameters else None
        self.strip_prompt = strip_prompt
        self._token_session = requests.Session()
        self._token_request = _TimedRequest(GoogleAuthRequest(self._token_session), settings.request_timeout_s)
        self._token_lock = threading.Lock()
        self._stale_token: str | None = None
        self.token_refreshes = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VertexAIAdapter:
        env = Env(environ, adapter="vertex")
        info, _source = _credentials_from_env(env)
        endpoint = env.url(
            "VERTEX_ENDPOINT_URL",
            "the endpoint's full URL, https://{region}-aiplatform.googleapis.com/v1/projects/{project}/"
            "locations/{region}/endpoints/{endpoint_id}",
            required=True,
        )
        assert endpoint is not None
        bare = endpoint[: -len(":predict")] if endpoint.endswith(":predict") else endpoint
        if not _ENDPOINT_RE.match(bare):
            raise AdapterConfigError(
                f"vertex: VERTEX_ENDPOINT_URL={endpoint!r} is not a Vertex AI endpoint URL; expected "
                "https://{region}-aiplatform.googleapis.com/v1/projects/{project}/locations/{region}/endpoints/{endpoint_id}"
            )
        return cls(
            CommonSettings.from_env(env),
            service_account_info=info,
            endpoint_url=bare,
            instance_params=env.json_object("VERTEX_INSTANCE_PARAMS"),
            parameters=env.json_object("VERTEX_PARAMETERS") or None,
            strip_prompt=env.bool("VERTEX_STRIP_PROMPT", True),
            api=env.choice("VERTEX_API", VERTEX_APIS, "predict") or "predict",
        )

    # ---- credentials ---------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        with self._token_lock:
            creds = self._creds
            if not creds.valid or (self._stale_token is not None and creds.token == self._stale_token):
                try:
                    creds.refresh(self._token_request)
                except google.auth.exceptions.GoogleAuthError as exc:
                    raise CredentialError(
                        self.redact(f"token refresh failed ({type(exc).__name__}): {_auth_error_text(exc)}")
                    ) from None
                self.token_refreshes += 1
                self._stale_token = None
            token = creds.token
        return {"Authorization": f"Bearer {token}"}

    def on_unauthorized(self) -> bool:
        with self._token_lock:
            self._stale_token = self._creds.token
        return True

    # ---- protocol ------------------------------------------------------------------
    def build_request(self, text: str) -> PreparedRequest:
        if self.api == "gemini":
            return self.build_chat_request(ChatCall([{"role": "user", "content": text}]), stream=False)
        instance: dict[str, Any] = {"prompt": text}
        if self.settings.max_tokens is not None:
            instance["max_tokens"] = self.settings.max_tokens
        if self.settings.temperature is not None:
            instance["temperature"] = self.settings.temperature
        instance.update(self.instance_params)
        body: dict[str, Any] = {"instances": [instance]}
        if self.parameters:
            body["parameters"] = self.parameters
        return PreparedRequest(
            url=f"{self.endpoint_url}:predict",
            json=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )

    def build_chat_request(self, call: ChatCall, stream: bool) -> PreparedRequest | None:
        """Gemini's request for a chat call; None for ``predict`` endpoints (the prompt goes as text)."""
        if self.api != "gemini":
            return None
        return PreparedRequest(
            url=f"{self.endpoint_url}:{'streamGenerateContent' if stream else 'generateContent'}",
            json=gemini_body(call, self.settings.max_tokens, self.settings.temperature, self.parameters),
            headers={"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"},
            params={"alt": "sse"} if stream else None,
        )

    def parse_chat_response(self, call: ChatCall, body: Any) -> RowResult:
        return parse_gemini(body)

    def parse_stream_event(self, data: str) -> Iterator[StreamDelta]:
        result = parse_gemini(json.loads(data), final=False)
        yield StreamDelta(result.generated_text, result.finish_reason or None, result.prompt_tokens, result.completion_tokens)

    def parse_response(self, text: str, body: Any) -> RowResult:
        if self.api == "gemini":
            return parse_gemini(body)
        prediction = first_prediction_text(body)
        if self.strip_prompt:
            prediction = strip_prompt_echo(prediction, text)
        return RowResult(prediction)

    def close(self) -> None:
        super().close()
        self._token_session.close()


class _TimedRequest:
    """google-auth's requests transport with our REQUEST_TIMEOUT_S (its own default is 120 s)."""

    def __init__(self, inner: GoogleAuthRequest, timeout_s: float) -> None:
        self._inner = inner
        self._timeout_s = timeout_s

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, timeout: Any = None, **kwargs: Any) -> Any:
        return self._inner(url, method=method, body=body, headers=headers, timeout=timeout or self._timeout_s, **kwargs)


def _auth_error_text(exc: Exception) -> str:
    # RefreshError's args are (message, response_body); the message is enough.
    if exc.args:
        return " ".join(str(exc.args[0]).split())[:300]
    return str(exc)[:300]
