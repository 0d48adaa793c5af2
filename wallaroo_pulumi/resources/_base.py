"""What every Wallaroo dynamic provider shares: inputs checking, diffing and runtime errors.

Providers are pickled into the stack state by Pulumi (dill), so they hold no
state: each call builds a fresh client from the `url`/`token` inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pydantic
from pulumi.dynamic import CheckFailure, CheckResult, DiffResult
from pulumi.runtime.rpc import UNKNOWN

from ..client import WallarooClient

CONNECTION_KEYS = ("url", "token")


def is_unknown(value: Any) -> bool:
    """True for values `preview` cannot know yet (outputs of resources still to be created)."""
    if value == UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(is_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(is_unknown(v) for v in value)
    return False


def client(props: dict[str, Any]) -> WallarooClient:
    return WallarooClient(props["url"], props.get("token") or "")


def check_inputs(model: type[pydantic.BaseModel], news: dict[str, Any], fields: Iterable[str]) -> CheckResult:
    """Validate the known inputs with `model`; each problem becomes a failure naming its field.

    Unknown values are left for the real `up`, where they are known and checked again.
    """
    data = {k: news.get(k) for k in fields if k in news and news.get(k) is not None}
    known = {k: v for k, v in data.items() if not is_unknown(v)}
    failures: list[CheckFailure] = []
    try:
        model.model_validate(known, context={"partial": len(known) != len(data)})
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            if not loc or loc[0] not in known:
                continue  # a required field that is still unknown at preview
            failures.append(CheckFailure(".".join(loc), _reason(err)))
    return CheckResult(news, failures)


def _reason(err: dict[str, Any]) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("missing",):
        return "is required"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{msg}{shown}"


def diff(olds: dict[str, Any], news: dict[str, Any], compared: Iterable[str],
         replace_on: Iterable[str] = ()) -> DiffResult:
    """Changes among `compared` inputs; replace only when one of `replace_on` changed."""
    changed = [k for k in compared if _norm(olds.get(k)) != _norm(news.get(k))]
    replaces = [k for k in changed if k in set(replace_on)]
    return DiffResult(changes=bool(changed), replaces=replaces)


def _norm(value: Any) -> Any:
    """Treat None, {} and [] alike so an unset optional input never shows as a change."""
    return None if value in (None, {}, []) else value
