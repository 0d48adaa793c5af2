"""A scope check that waits for the body: an upload whose `file` part comes before its `metadata`
(the Wallaroo SDK's order) streams first, and its route checks the workspace once metadata is read,
before anything is stored (D38)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.types import Scope

from wallaroo_pulumi.runtime.services.access.keys import ApiKey
from wallaroo_pulumi.runtime.services.access.policy import Rule, Target, within

STATE_KEY = "wallaroo.deferred_scope"


@dataclass(frozen=True)
class DeferredScope:
    key: ApiKey
    rule: Rule

    def check(self, workspace_id: int) -> None:
        within(self.key, self.rule, Target(frozenset({workspace_id})))


def defer(scope: Scope, key: ApiKey, rule: Rule) -> None:
    scope.setdefault("state", {})[STATE_KEY] = DeferredScope(key, rule)


def check_deferred(state: dict[str, Any], workspace_id: int) -> None:
    """Forbidden unless the request's key may act in `workspace_id` (no-op when checked already)."""
    pending = state.get(STATE_KEY)
    if pending is not None:
        pending.check(workspace_id)
