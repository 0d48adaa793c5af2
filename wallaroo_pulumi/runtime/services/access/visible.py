"""What a listing that names no workspace answers a key scoped to one: that workspace's, as Wallaroo lists
what the caller can see (the SDK's `list_orchestrations()` and `list_tasks()` inside a task name none),
instead of refusing "every workspace" (D59). Set by the access middleware, read by the listing routes."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from wallaroo_pulumi.runtime.services.access.keys import ApiKey
from wallaroo_pulumi.runtime.services.access.policy import Rule, Target

STATE_KEY = "wallaroo.visible_workspace"


def narrow(scope: Scope, key: ApiKey, rule: Rule, target: Target) -> Target:
    """A listing of every workspace (a rule that `narrows`) asked with a key of one workspace: that one alone."""
    if key.role == "admin" or not rule.narrows or target.workspaces is not None or key.workspace_id is None:
        return target
    scope.setdefault("state", {})[STATE_KEY] = key.workspace_id
    return Target(frozenset({key.workspace_id}))


def visible_workspace(state: dict[str, Any]) -> int | None:
    """The one workspace a listing that named none is narrowed to (None: not narrowed, every workspace)."""
    ws = state.get(STATE_KEY)
    return ws if isinstance(ws, int) else None
