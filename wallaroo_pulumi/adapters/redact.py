"""Keeping credentials out of error strings and log records: the adapter's own secrets plus patterns
for credentials an upstream might echo back (OpenAI repeats a masked bad key in its 401 message).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), REDACTED),
    (re.compile(r"(?i)(\"?private_key\"?\s*[:=]\s*)(?:\"[^\"]*\"|'[^']*')"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=*-]{6,}"), r"\1 " + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_*.-]{4,}"), REDACTED),
    # A key an upstream echoed half-masked, e.g. "abc1********wxyz".
    (re.compile(r"[A-Za-z0-9_.-]{0,12}\*{4,}[A-Za-z0-9_.-]{0,12}"), REDACTED),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), REDACTED),
    # JWTs, e.g. a signed service-account assertion.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    (
        re.compile(r"(?i)((?:api[-_]?key|access[-_]?token|client[-_]?secret|assertion)[\"']?\s*[:=]\s*[\"']?)[^\s\"',&}]+"),
        r"\1" + REDACTED,
    ),
)


class Redactor:
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        if not secret:
            return
        secret = str(secret)
        if len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)
            # Also the pieces: a multi-line secret (a PEM key) may be echoed line by line.
            for line in secret.splitlines():
                line = line.strip()
                if len(line) >= 16 and line not in self._secrets:
                    self._secrets.append(line)
            self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: object) -> str:
        out = str(text)
        for s in self._secrets:
            if s in out:
                out = out.replace(s, REDACTED)
        for pat, repl in _PATTERNS:
            out = pat.sub(repl, out)
        return out


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites a record's message through a Redactor."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - never let logging break a prediction
            return True
        record.msg = self.redactor(msg)
        record.args = None
        return True
