"""What every HTTP adapter shares besides the client loop of :mod:`.http`: its settings, a row's
result, the errors, and reading an upstream's answer (Retry-After, the human part of an error body)."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from wallaroo_pulumi.adapters.chat import StreamDelta
from wallaroo_pulumi.adapters.config import Env
from wallaroo_pulumi.adapters.transport import Reply, TransportError

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
    finish_reason: str = ""  # OpenAI's names (stop, length, content_filter); "" when not reported


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


def short_upstream_message(response: Reply, limit: int = 300) -> str:
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


def plural(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


@dataclass
class PreparedRequest:
    url: str
    json: Any
    headers: dict[str, str]
    params: dict[str, str] | None = None


class Retry(NamedTuple):
    """An attempt that failed in a way worth retrying: what went wrong, the upstream's words, and how
    long it asked us to wait (``None``: back off)."""

    problem: str
    detail: str = ""
    retry_after: float | None = None


#: One attempt's end: the row (success or final failure), a :class:`Retry`, or None (re-authenticated).
Outcome = RowResult | Retry | None
#: One attempt, given (auth headers, attempt number, re-authenticated yet): yields what it streams.
Attempt = Callable[[dict[str, str], int, bool], Generator[StreamDelta, None, Outcome]]


def connection_error(exc: TransportError) -> Retry:
    return Retry(f"connection error ({type(exc).__name__}: {exc})")


def returning(value: Outcome) -> Generator[StreamDelta, None, Outcome]:
    """A plain attempt's outcome as an attempt that streams nothing."""
    yield from ()
    return value


def drain(steps: Generator[StreamDelta, None, RowResult]) -> RowResult:
    """Run a generator that yields nothing to its end; its return value."""
    try:
        next(steps)
    except StopIteration as done:
        return done.value
    raise AssertionError("a plain request streamed")  # pragma: no cover


def usage_int(value: Any) -> int:
    try:
        if value is None or isinstance(value, bool):
            return USAGE_UNKNOWN
        return int(value)
    except (TypeError, ValueError):
        return USAGE_UNKNOWN
