"""How resources find their runtime: explicit argument, then stack config, then environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pulumi

DEFAULT_URL = "http://127.0.0.1:8787"


@dataclass
class Connection:
    """A runtime URL and token; either may be a Pulumi Output (e.g. from `LocalRuntime`)."""

    url: Any = None
    token: Any = None


def resolve(explicit: Connection | None = None) -> tuple[pulumi.Input[str], pulumi.Output[str]]:
    """(url, secret token) in the documented order: argument, `wallaroo:url`/`wallaroo:token`, env."""
    config = pulumi.Config("wallaroo")
    explicit = explicit or Connection()
    url = explicit.url or config.get("url") or os.environ.get("WALLAROO_URL") or DEFAULT_URL
    token = explicit.token or config.get_secret("token") or os.environ.get("WALLAROO_TOKEN") or ""
    return url, pulumi.Output.secret(token)
