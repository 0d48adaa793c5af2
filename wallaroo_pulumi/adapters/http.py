"""The HTTP core every LLM adapter shares: one request per row, concurrent up to ``MAX_CONCURRENCY``,
with timeouts and retries (docs/endpoints.md). A row that finally fails gets ``generated_text=""``
and an ``error`` naming the upstream; every message passes through a :class:`Redactor`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
import numpy as np

from wallaroo_pulumi.adapters.config import Env
from wallaroo_pulumi.adapters.redact import Redactor
from wallaroo_pulumi.adapters.schemas import INPUT_FIELD

logger = logging.getLogger("wallaroo_pulumi.adapters")

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
USAGE_UNKNOWN = -1


class InputValidationError(ValueError):
    """The batch itself is unusable (e.g. no ``text`` column). The BYOP layer re-raises it
    as ``mac.exceptions.InferenceDataValidationError``."""


class RowResult(NamedTuple):
    generated_text: str
    prompt_tokens: int = USAGE_UNKNOWN
    completion_tokens: int = USAGE_UNKNOWN
    error: str = ""


class MalformedResponse(Exception):
    """The upstream answered 2xx but not in the shape its protocol promises."""


class CredentialError(Exception):
    """Obtaining credentials for a request failed (e.g. an OAuth2 token refresh)."""


@dataclass(frozen=True)
class CommonSettings:
    max_concurrency: int = 8
    request_timeout_s: float = 60.0
    max_retries: int = 3
    retry_backoff_s: float = 0.5
    retry_max_backoff_s: float = 20.0
    retry_after_max_s: float = 60.0
    max_tokens: int | None = 256
    temperature: float | None = None

    @classmethod
    def from_env(cls, env: Env) -> CommonSettings:
        max_tokens = env.int("MAX_TOKENS", 256, minimum=0)
        return cls(
            max_concurrency=env.int("MAX_CONCURRENCY", 8, minimum=1),
            request_timeout_s=env.float("REQUEST_TIMEOUT_S", 60.0, minimum=0.001),
            max_retries=env.int("MAX_RETRIES", 3, minimum=0),
            retry_backoff_s=env.float("RETRY_BACKOFF_S", 0.5, minimum=0.0),
            retry_max_backoff_s=env.float("RETRY_MAX_BACKOFF_S", 20.0, minimum=0.0),
            retry_after_max_s=env.float("RETRY_AFTER_MAX_S", 60.0, minimum=0.0),
            max_tokens=max_tokens or None,  # 0 = don't send a limit
            temperature=env.float("TEMPERATURE", None, minimum=0.0),
        )


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` or ``Retry-After`` (delta-seconds or
    an HTTP date); ``None`` when absent or unparseable."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def short_upstream_message(response: httpx.Response, limit: int = 300) -> str:
    """The human part of an upstream error body, whichever cloud's shape it has."""
    text = ""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # OpenAI, Azure OpenAI, Google APIs
            text = str(err.get("message") or err.get("code") or err)
        elif isinstance(err, str):  # OAuth2 token endpoints
            desc = body.get("error_description")
            text = f"{err}: {desc}" if desc else err
        else:
            text = str(body.get("message") or body.get("detail") or "")
    elif isinstance(body, str):
        text = body
    if not text:
        try:
            text = response.text
        except Exception:  # noqa: BLE001
            text = ""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _plural(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


@dataclass
class PreparedRequest:
    url: str
    json: Any
    headers: dict[str, str]
    params: dict[str, str] | None = None


class HttpLLMAdapter:
    """Base class: subclasses say how to build one row's request and read its answer."""

    #: Short upstream name used as the prefix of every error message.
    name: str = "llm"

    def __init__(self, settings: CommonSettings, redactor: Redactor | None = None) -> None:
        self.settings = settings
        self.redact = redactor or Redactor()
        timeout = httpx.Timeout(settings.request_timeout_s, connect=min(10.0, settings.request_timeout_s))
        limits = httpx.Limits(
            max_connections=settings.max_concurrency,
            max_keepalive_connections=settings.max_concurrency,
        )
        self._client = httpx.Client(timeout=timeout, limits=limits, follow_redirects=False)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    # ---- subclass hooks -------------------------------------------------------------
    def build_request(self, text: str) -> PreparedRequest:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse_response(self, text: str, body: Any) -> RowResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def auth_headers(self) -> dict[str, str]:
        """Per-request credentials (may refresh a token); raise CredentialError on failure."""
        return {}

    def on_unauthorized(self) -> bool:
        """Called once on HTTP 401; return True to retry with fresh credentials."""
        return False

    # ---- batch ----------------------------------------------------------------------
    def predict(self, input_data: Mapping[str, Any]) -> dict[str, np.ndarray]:
        texts = self._texts(input_data)
        results = self.complete_many(texts)
        return {
            "generated_text": np.array([r.generated_text for r in results], dtype=str),
            "prompt_tokens": np.array([r.prompt_tokens for r in results], dtype=np.int64),
            "completion_tokens": np.array([r.completion_tokens for r in results], dtype=np.int64),
            "error": np.array([r.error for r in results], dtype=str),
        }

    def complete_many(self, texts: list[str | None]) -> list[RowResult]:
        if len(texts) <= 1:
            return [self._safe_complete(t) for t in texts]
        return list(self._executor().map(self._safe_complete, texts))

    def _texts(self, input_data: Mapping[str, Any]) -> list[str | None]:
        if not isinstance(input_data, Mapping) or INPUT_FIELD not in input_data:
            got = sorted(input_data) if isinstance(input_data, Mapping) else type(input_data).__name__
            raise InputValidationError(
                f"{self.name}: input is missing the {INPUT_FIELD!r} column (a string per row); got {got}"
            )
        column = input_data[INPUT_FIELD]
        values = np.asarray(column, dtype=object).reshape(-1).tolist()
        out: list[str | None] = []
        for v in values:
            if v is None or (isinstance(v, float) and np.isnan(v)):
                out.append(None)
            elif isinstance(v, bytes):
                out.append(v.decode("utf-8", errors="replace"))
            else:
                out.append(str(v))
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.max_concurrency, thread_name_prefix=f"{self.name}-llm"
                )
            return self._pool

    def close(self) -> None:
        self._closed = True
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self._client.close()

    def __enter__(self) -> HttpLLMAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one row --------------------------------------------------------------------
    def _safe_complete(self, text: str | None) -> RowResult:
        if text is None:
            return RowResult("", error=f"{self.name}: input text is null; expected a string prompt")
        try:
            return self.complete(text)
        except Exception as exc:  # noqa: BLE001 - one bad row must not fail the batch
            msg = self.redact(f"{self.name}: {type(exc).__name__}: {exc}")
            logger.warning("%s", msg)
            return RowResult("", error=msg)

    def complete(self, text: str) -> RowResult:
        s = self.settings
        attempts_allowed = s.max_retries + 1
        attempt = 0
        reauthed = False
        while True:
            attempt += 1
            try:
                auth = self.auth_headers()
            except CredentialError as exc:
                return self._fail(f"{self.name}: credentials: {exc}")
            req = self.build_request(text)
            headers = {**req.headers, **auth}
            retry_after: float | None = None
            detail = ""
            try:
                response = self._client.post(req.url, json=req.json, headers=headers, params=req.params)
            except httpx.TimeoutException as exc:
                problem = f"request timed out after {s.request_timeout_s:g}s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"connection error ({type(exc).__name__}: {exc})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return self._parse(text, response)
                detail = short_upstream_message(response)
                reason = response.reason_phrase or httpx.codes.get_reason_phrase(status)
                problem = f"HTTP {status} {reason}".rstrip()
                if status == 401 and not reauthed and self.on_unauthorized():
                    reauthed = True
                    attempt -= 1  # fetching fresh credentials is not a retry
                    continue
                if status not in RETRYABLE_STATUSES:
                    return self._fail(self._message(problem, attempt, detail))
                retry_after = parse_retry_after(response.headers)

            if attempt >= attempts_allowed:
                return self._fail(self._message(problem, attempt, detail))
            if retry_after is not None and retry_after > s.retry_after_max_s:
                return self._fail(
                    self._message(problem, attempt, detail)
                    + f" (upstream asked to retry after {retry_after:g}s, more than RETRY_AFTER_MAX_S={s.retry_after_max_s:g})"
                )
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            logger.warning(
                "%s",
                self.redact(
                    f"{self._message(problem, attempt, detail)}; retrying in {delay:.2f}s "
                    f"(attempt {attempt + 1} of {attempts_allowed})"
                ),
            )
            if delay > 0:
                time.sleep(delay)

    def _message(self, problem: str, attempt: int, detail: str) -> str:
        msg = f"{self.name}: {problem} after {_plural(attempt)}"
        return f"{msg}: {detail}" if detail else msg

    def _parse(self, text: str, response: httpx.Response) -> RowResult:
        status = response.status_code
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            snippet = " ".join(response.text.split())[:120]
            return self._fail(f"{self.name}: malformed response (HTTP {status}): body is not JSON: {snippet!r}")
        try:
            return self.parse_response(text, body)
        except (MalformedResponse, KeyError, IndexError, TypeError, AttributeError) as exc:
            what = str(exc) if isinstance(exc, MalformedResponse) else f"{type(exc).__name__}: {exc}"
            return self._fail(f"{self.name}: malformed response (HTTP {status}): {what}")

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        ceiling = min(s.retry_max_backoff_s, s.retry_backoff_s * (2 ** (attempt - 1)))
        return ceiling / 2 + random.uniform(0.0, ceiling / 2)  # exponential, "equal jitter"

    def _fail(self, message: str) -> RowResult:
        message = self.redact(message)
        logger.warning("%s", message)
        return RowResult("", USAGE_UNKNOWN, USAGE_UNKNOWN, message)


def usage_int(value: Any) -> int:
    try:
        if value is None or isinstance(value, bool):
            return USAGE_UNKNOWN
        return int(value)
    except (TypeError, ValueError):
        return USAGE_UNKNOWN
