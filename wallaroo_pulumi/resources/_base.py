"""What every Wallaroo dynamic provider shares: inputs checking, diffing and runtime errors.

Providers hold no state: each call builds a client from its `url`/`token` inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pydantic
from pulumi.dynamic import CheckFailure, CheckResult, DiffResult, ReadResult
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi.runtime.rpc import UNKNOWN, unwrap_rpc_secret

from ..client import WallarooClient

CONNECTION_KEYS = ("url", "token")


def is_unknown(value: Any) -> bool:
    """True for values `preview` cannot know yet (outputs of resources still to be created)."""
    if isinstance(value, Unknown) or (isinstance(value, str) and value == UNKNOWN):
        return True
    if isinstance(value, dict):
        return any(is_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(is_unknown(v) for v in value)
    return False


def reveal(value: Any) -> Any:
    """`value` without Pulumi's secret wrappers (`check` sees secrets wrapped), for validation only."""
    value = unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def secret(value: Any) -> Any:
    """`value` marked secret in what a provider returns (Pulumi's wire form of a secret), so a
    token that `read` or an import fills in is encrypted in the state like the program's."""
    value = unwrap_rpc_secret(value)
    return {rpc._special_sig_key: rpc._special_secret_sig, "value": value}  # noqa: SLF001


def client(props: dict[str, Any]) -> WallarooClient:
    return WallarooClient(props["url"], reveal(props.get("token")) or "")


def check_inputs(model: type[pydantic.BaseModel], news: dict[str, Any], fields: Iterable[str]) -> CheckResult:
    """Validate the known inputs with `model`; each problem becomes a failure naming its field.

    Unknown values are left for the real `up`, where they are known and checked again.
    """
    data = {k: reveal(news.get(k)) for k in fields if k in news and news.get(k) is not None}
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
         replace_on: Iterable[str] = (), normalize: dict[str, Any] | None = None) -> DiffResult:
    """Changes among `compared` inputs; replace only when one of `replace_on` changed.

    `normalize` maps a key to a function giving the value's canonical form (D7).
    """
    normalize = normalize or {}

    def norm(key: str, value: Any) -> Any:
        value = reveal(value)
        if key in normalize and value is not None and not is_unknown(value):
            value = normalize[key](value)
        return _norm(value)

    changed = [k for k in compared if norm(k, olds.get(k)) != norm(k, news.get(k))]
    replaces = [k for k in changed if k in set(replace_on)]
    return DiffResult(changes=bool(changed), replaces=replaces)


def _norm(value: Any) -> Any:
    """Treat None, {} and [] alike so an unset optional input never shows as a change."""
    return None if value in (None, {}, []) else value


def read_result(id_: str, outs: dict[str, Any], input_keys: Iterable[str]) -> ReadResult:
    """What `read` returns: the live state, plus the inputs it implies. The engine needs those
    inputs to import a resource, and a refresh then diffs the program against what is live."""
    keys = set(input_keys) | {"token"}
    return ReadResult(id_, outs, {k: v for k, v in outs.items() if k in keys})
