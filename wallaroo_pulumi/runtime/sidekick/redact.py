"""Keep a sidekick's env values (its credentials) out of error messages and logs: every message
that leaves the sidekick subsystem (ERROR frames, exception text, forwarded stderr lines) goes
through an `EnvRedactor` first, since model code may echo its credentials."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REDACTED = "[REDACTED]"

_SECRET_NAME = re.compile(
    r"(?i)(KEY|TOKEN|SECRET|PASSW|PASSWD|PWD|CRED|AUTH|PRIVATE|CERT|SAS|SIGNATURE|CONN|SESSION|COOKIE|DSN)"
)
_STRONG_SECRET_NAME = re.compile(r"(?i)(SECRET|PASSW|PASSWD|PWD|PRIVATE|PIN\b)")
_PLAIN = re.compile(r"(?i)^(?:[+-]?\d+(?:\.\d+)?|true|false|yes|no|on|off|none|null)$")


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values of ``env`` that must never appear in a message (4+ characters): every value of a
    variable named like a password or secret (``SECRET``, ``PASSWORD``, ``PRIVATE``, ...); every
    value of one named like a credential (``KEY``, ``TOKEN``, ``AUTH``, ...) unless it is a plain
    number or boolean (``MAX_TOKENS=4096``); every other value of 8+ characters that is not a
    plain number or boolean. Short plain settings (``LISTENER_TEXT_FIELD=text``) stay readable."""
    out: set[str] = set()
    for name, value in env.items():
        if not value:
            continue
        value = str(value)
        if _STRONG_SECRET_NAME.search(name) or (_SECRET_NAME.search(name) and not _PLAIN.match(value)):
            if len(value) >= 4:
                out.add(value)
        elif len(value) >= 8 and not _PLAIN.match(value):
            out.add(value)
        # A multi-line value (a PEM key) may be echoed one line at a time.
        for line in value.splitlines():
            line = line.strip()
            if len(line) >= 16 and value in out:
                out.add(line)
    return sorted(out, key=len, reverse=True)


class EnvRedactor:
    """Replace known env values in text with ``[REDACTED]``."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values = sorted({v for v in values if v}, key=len, reverse=True)

    @classmethod
    def for_env(cls, env: Mapping[str, str]) -> EnvRedactor:
        return cls(secret_values(env))

    def __call__(self, text: object) -> str:
        out = str(text)
        for value in self._values:
            if value in out:
                out = out.replace(value, REDACTED)
        return out

    def __bool__(self) -> bool:
        return bool(self._values)
