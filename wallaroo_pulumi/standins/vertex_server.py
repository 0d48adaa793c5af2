"""A stand-in for Google's OAuth2 token endpoint and a Vertex AI online-prediction endpoint.

Tests make a throwaway service account with :func:`generate_service_account` (or
:meth:`VertexStandin.create_service_account`, which also registers it).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from wallaroo_pulumi.standins import gemini
from wallaroo_pulumi.standins.base import StandinServer, paced

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
MAX_ASSERTION_LIFETIME_S = 3600
CLOCK_SKEW_S = 300
#: Audiences Google's token endpoint accepts in an assertion; google-auth always signs the first.
GOOGLE_TOKEN_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token")

_TIMEFRAME = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
    "Check your iat and exp values in the JWT claim."
)


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def generate_service_account(
    token_uri: str,
    *,
    project_id: str = "standin-project",
    client_email: str | None = None,
    key_size: int = 2048,
) -> tuple[dict[str, Any], str]:
    """A throwaway service-account key file (as a dict) and its public key PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    email = client_email or f"llm-invoker@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": private_pem,
        "client_email": email,
        "client_id": str(100000000000000000000 + secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email.replace('@', '%40')}",
        "universe_domain": "googleapis.com",
    }
    return info, public_pem


def google_error(status: int, message: str, status_name: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": status_name}}


_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class VertexStandin(StandinServer):
    """`POST /token` (the service-account JWT-bearer grant, assertion verified) and, with its tokens, an
    endpoint's `...:predict`, and Gemini's `...:generateContent` and `...:streamGenerateContent` (`gemini`).

    `response_style`: `vllm` (``"Prompt:\\n<p>\\nOutput:\\n<answer>"``, as Model Garden vLLM containers answer),
    `plain`, `nested` (``["Prompt:...Output:\\n<answer>"]``) or `content` (``{"content": <answer>}``).
    """

    fault_exempt_paths = ("/token",)

    def __init__(
        self,
        project: str = "standin-project",
        location: str = "us-central1",
        endpoint_id: str = "1234567890123456789",
        *,
        token_lifetime_s: int = 3600,
        response_style: str = "vllm",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.project = project
        self.location = location
        self.endpoint_id = endpoint_id
        self.token_lifetime_s = token_lifetime_s
        self.response_style = response_style
        self._lock = threading.Lock()
        self._accounts: dict[str, tuple[Any, str | None]] = {}  # email -> (public key, key id)
        self._tokens: dict[str, tuple[float, str, frozenset[str]]] = {}  # token -> (expiry, email, scopes)
        self.tokens_minted = 0
        self.token_requests = 0
        self.rejections: list[str] = []
        super().__init__(host, port)

    # ---- configuration -----------------------------------------------------------------
    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def endpoint_url(self) -> str:
        return f"{self.base_url}/v1/projects/{self.project}/locations/{self.location}/endpoints/{self.endpoint_id}"

    def register_service_account(self, client_email: str, public_key_pem: str | bytes, key_id: str | None = None) -> None:
        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        public_key = serialization.load_pem_public_key(pem)
        with self._lock:
            self._accounts[client_email] = (public_key, key_id)

    def create_service_account(self, **kwargs: Any) -> dict[str, Any]:
        """Generate a key pair, register its public half, and return the key file dict."""
        info, public_pem = generate_service_account(self.token_uri, project_id=self.project, **kwargs)
        self.register_service_account(info["client_email"], public_pem, info["private_key_id"])
        return info

    def revoke_all_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def extra_stats(self) -> dict[str, Any]:
        return {"tokens_minted": self.tokens_minted, "token_requests": self.token_requests, "rejections": list(self.rejections)}

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.tokens_minted = 0
            self.token_requests = 0
            self.rejections.clear()


    async def _authorized(self, request: Request, project: str, location: str, endpoint: str) -> tuple[Any, Response | None]:
        """The request's JSON body, or the answer Google gives a bad token, scope, body or endpoint."""
        auth = request.headers.get("authorization", "")
        challenge = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'}
        if not auth.lower().startswith("bearer "):
            await self.read_json(request)
            return None, JSONResponse(
                google_error(
                    401,
                    "Request is missing required authentication credential. Expected OAuth 2 access token, login "
                    "cookie or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    "UNAUTHENTICATED",
                ),
                401,
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        token = auth[7:].strip()
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[0] <= time.time():
            await self.read_json(request)
            return None, JSONResponse(
                google_error(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                    "or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    "UNAUTHENTICATED",
                ),
                401,
                headers=challenge,
            )
        if CLOUD_PLATFORM_SCOPE not in entry[2]:
            await self.read_json(request)
            return None, JSONResponse(google_error(403, "Request had insufficient authentication scopes.", "PERMISSION_DENIED"), 403)
        body, bad = await self.read_json(request)
        if bad is not None:
            return None, JSONResponse(google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT"), 400)
        if (project, location, endpoint) != (self.project, self.location, self.endpoint_id):
            return None, JSONResponse(
                google_error(
                    404,
                    f'Endpoint "projects/{project}/locations/{location}/endpoints/{endpoint}" not found.',
                    "NOT_FOUND",
                ),
                404,
            )
        return body, None

    # ---- shapes ------------------------------------------------------------------------
    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        return google_error(status, message, _STATUS_NAMES.get(status, "UNKNOWN"))

    def rate_limit_message(self, retry_after: float | None) -> str:
        return (
            "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: "
            "standin. Please submit a quota increase request."
        )

    def server_error_message(self, status: int) -> str:
        if status == 503:
            return "The service is currently unavailable."
        return "Internal error encountered."

    # ---- token endpoint --------------------------------------------------------------------
    def _reject(self, reason: str, error: str = "invalid_grant", status: int = 400) -> JSONResponse:
        with self._lock:
            self.rejections.append(reason)
        return JSONResponse({"error": error, "error_description": reason}, status)

    def _verify_assertion(self, assertion: str, own_uri: str) -> tuple[str, frozenset[str]] | JSONResponse:
        parts = assertion.split(".")
        if len(parts) != 3:
            return self._reject("Invalid JWT: not a JWS compact serialization.")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError):
            return self._reject("Invalid JWT: the header or claims are not base64url-encoded JSON.")
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return self._reject("Invalid JWT: the header or claims are not JSON objects.")
        if header.get("alg") != "RS256":
            return self._reject(f"Invalid JWT: unsupported signing algorithm {header.get('alg')!r}; expected RS256.")
        iss = claims.get("iss")
        with self._lock:
            account = self._accounts.get(iss) if isinstance(iss, str) else None
        if account is None:
            return self._reject("Invalid grant: account not found")
        public_key, key_id = account
        if key_id is not None and header.get("kid") not in (None, key_id):
            return self._reject("Invalid JWT Signature.")
        try:
            public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return self._reject("Invalid JWT Signature.")
        aud = claims.get("aud")
        if aud not in (*GOOGLE_TOKEN_AUDIENCES, own_uri):
            return self._reject(
                f"Invalid JWT: Failed audience check. The expected value was {GOOGLE_TOKEN_AUDIENCES[0]} "
                f"but the given value was {aud}"
            )
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)):
            return self._reject(_TIMEFRAME)
        if iat > now + CLOCK_SKEW_S or exp <= now - CLOCK_SKEW_S or exp - iat > MAX_ASSERTION_LIFETIME_S or exp <= iat:
            return self._reject(_TIMEFRAME)
        scope = claims.get("scope")
        if not isinstance(scope, str) or not scope.strip():
            return self._reject("Invalid OAuth scope or ID token audience provided.", error="invalid_scope")
        return iss, frozenset(scope.split())

    def _routes(self, app: FastAPI) -> None:
        @app.post("/token")
        async def token(request: Request) -> Response:
            with self._lock:
                self.token_requests += 1
            raw = (await request.body()).decode("utf-8", "replace")
            form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
            self.record(request, {k: ("<jwt>" if k == "assertion" else v) for k, v in form.items()})
            grant_type = form.get("grant_type")
            if grant_type != JWT_BEARER_GRANT:
                return self._reject(f"Invalid grant_type: {grant_type or ''}", error="unsupported_grant_type")
            assertion = form.get("assertion")
            if not assertion:
                return self._reject("Missing required parameter: assertion", error="invalid_request")
            verified = self._verify_assertion(assertion, self.token_uri)
            if isinstance(verified, JSONResponse):
                return verified
            email, scopes = verified
            access_token = "ya29.standin-" + secrets.token_urlsafe(48)
            with self._lock:
                self._tokens[access_token] = (time.time() + self.token_lifetime_s, email, scopes)
                self.tokens_minted += 1
            return JSONResponse(
                {"access_token": access_token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"},
                headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"},
            )

        @app.post("/v1/projects/{project}/locations/{location}/endpoints/{endpoint}:predict")
        async def predict(project: str, location: str, endpoint: str, request: Request) -> Response:
            body, refused = await self._authorized(request, project, location, endpoint)
            if refused is not None:
                return refused
            instances = body.get("instances") if isinstance(body, dict) else None
            if not isinstance(instances, list) or not instances:
                return JSONResponse(
                    google_error(400, "Invalid JSON payload received. 'instances' must be a non-empty list.", "INVALID_ARGUMENT"), 400
                )
            predictions = []
            for i, inst in enumerate(instances):
                if not isinstance(inst, dict) or not isinstance(inst.get("prompt"), str):
                    return JSONResponse(
                        google_error(400, f"instances[{i}]: a 'prompt' string is required.", "INVALID_ARGUMENT"), 400
                    )
                max_tokens = inst.get("max_tokens")
                answer, _, _ = self.answer(inst["prompt"], max_tokens if isinstance(max_tokens, int) else None)
                predictions.append(self._shape(inst["prompt"], answer))
            return JSONResponse(
                {
                    "predictions": predictions,
                    "deployedModelId": "8000000000000000000",
                    "model": f"projects/{self.project}/locations/{self.location}/models/standin-llm",
                    "modelDisplayName": "standin-llm",
                    "modelVersionId": "1",
                }
            )

        @app.post("/v1/projects/{project}/locations/{location}/endpoints/{endpoint}:generateContent")
        async def generate_content(project: str, location: str, endpoint: str, request: Request) -> Response:
            body, refused = await self._authorized(request, project, location, endpoint)
            if refused is not None:
                return refused
            if (problem := gemini.check_request(body)) is not None:
                return JSONResponse(google_error(400, problem, "INVALID_ARGUMENT"), 400)
            return JSONResponse(gemini.generate(body, self.answer))

        @app.post("/v1/projects/{project}/locations/{location}/endpoints/{endpoint}:streamGenerateContent")
        async def stream_generate_content(project: str, location: str, endpoint: str, request: Request) -> Response:
            body, refused = await self._authorized(request, project, location, endpoint)
            if refused is not None:
                return refused
            if (problem := gemini.check_request(body)) is not None:
                return JSONResponse(google_error(400, problem, "INVALID_ARGUMENT"), 400)
            chunks = gemini.stream_chunks(body, self.answer)
            if request.query_params.get("alt") == "sse":
                events, media = gemini.sse_events(chunks), "text/event-stream"
            else:
                events, media = gemini.json_array_events(chunks), "application/json; charset=UTF-8"
            return StreamingResponse(paced(events, self.faults.token_interval_s), media_type=media)

    def _shape(self, prompt: str, answer: str) -> Any:
        echoed = f"Prompt:\n{prompt}\nOutput:\n{answer}"
        if self.response_style == "plain":
            return answer
        if self.response_style == "nested":
            return [echoed]
        if self.response_style == "content":
            return {"content": answer}
        return echoed
