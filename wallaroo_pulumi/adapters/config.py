"""Reading adapter settings from the sidekick env. Every problem is an :class:`AdapterConfigError`
naming the variable, what was expected and how to set it, so ``pulumi up`` fails with that message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any


class AdapterConfigError(ValueError):
    """A required environment variable is missing or one has an unusable value."""


def _sidekick_hint(var: str, secret: bool, config_key: str | None) -> str:
    key = config_key or _camel(var)
    if secret:
        return (
            f"Store it as a Pulumi secret (`pulumi config set --secret {key} <value>`, or pipe a file: "
            f"`pulumi config set --secret {key} < file`) and pass it to the pipeline's sidekick env for this model, "
            f"e.g. sidekick_env={{'{var}': config.require_secret('{key}')}}."
        )
    return (
        f"Set it in the pipeline's sidekick env for this model (e.g. `pulumi config set {key} <value>` and "
        f"sidekick_env={{'{var}': config.require('{key}')}})."
    )


def _camel(var: str) -> str:
    parts = var.lower().split("_")
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


class Env:
    """Typed access to one environment mapping (``os.environ`` by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None, *, adapter: str = "adapter") -> None:
        self._env = dict(os.environ if environ is None else environ)
        self.adapter = adapter

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value

    def require(self, name: str, what: str, *, secret: bool = False, config_key: str | None = None) -> str:
        value = self.raw(name)
        if value is None:
            raise AdapterConfigError(
                f"{self.adapter}: environment variable {name} is not set; it must hold {what}. "
                + _sidekick_hint(name, secret, config_key)
            )
        # Strip even secrets: `pulumi config set --secret k < file` keeps the file's trailing newline.
        return value.strip()

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

    def int(self, name: str, default: int, *, minimum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = int(value.strip())
        except ValueError:
            raise AdapterConfigError(
                f"{self.adapter}: environment variable {name}={value!r} is not an integer; "
                f"expected a whole number (default {default})."
            ) from None
        if minimum is not None and parsed < minimum:
            raise AdapterConfigError(
                f"{self.adapter}: environment variable {name}={parsed} is too small; expected >= {minimum}."
            )
        return parsed

    def float(self, name: str, default: float | None, *, minimum: float | None = None) -> float | None:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = float(value.strip())
        except ValueError:
            raise AdapterConfigError(
                f"{self.adapter}: environment variable {name}={value!r} is not a number; "
                f"expected a decimal number (default {default})."
            ) from None
        if minimum is not None and parsed < minimum:
            raise AdapterConfigError(
                f"{self.adapter}: environment variable {name}={parsed} is too small; expected >= {minimum}."
            )
        return parsed

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off"):
            return False
        raise AdapterConfigError(
            f"{self.adapter}: environment variable {name}={value!r} is not a boolean; expected true or false."
        )

    def json_object(self, name: str) -> dict[str, Any]:
        value = self.raw(name)
        if value is None:
            return {}
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise AdapterConfigError(
                f"{self.adapter}: environment variable {name} is not valid JSON ({exc.msg} at position {exc.pos}); "
                'expected a JSON object such as {"top_p": 0.9}.'
            ) from None
        if not isinstance(parsed, dict):
            raise AdapterConfigError(
                f"{self.adapter}: environment variable {name} must be a JSON object, got {type(parsed).__name__}."
            )
        return parsed

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        v = value.strip().lower()
        if v not in choices:
            raise AdapterConfigError(
                f"{self.adapter}: environment variable {name}={value!r} is not one of {', '.join(choices)}."
            )
        return v

    def url(self, name: str, what: str, *, required: bool = True, default: str | None = None) -> str | None:
        value = self.require(name, what) if required else self.str(name, default)
        if value is None:
            return None
        value = value.strip()
        if not (value.startswith("https://") or value.startswith("http://")):
            raise AdapterConfigError(
                f"{self.adapter}: environment variable {name}={value!r} is not an http(s) URL; expected {what}."
            )
        return value.rstrip("/")
