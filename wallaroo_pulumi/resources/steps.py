"""Rollout steps of a `WallarooPipeline` (D47): a weighted or key split, a shadow deploy and a
fallback chain, written as the definition steps Wallaroo's SDK writes (plus our `Fallback`).
A model is a `WallarooModel` or a plain {name, version, sha} dict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pulumi

from ..client.wire import STEP_KINDS, refs_in

FALL_THROUGH = ("timeout", "429", "5xx", "connection", "content_filter", "step_error")
SHADOW_TAIL = [{"AuditResults": {"from": 1, "to": None}}, {"MultiOut": {}}]


def model_ref(model: Any) -> Any:
    """A model's {name, version, sha, model_version_id}: from a `WallarooModel`'s outputs, or the dict given."""
    if isinstance(model, dict):
        return model
    return pulumi.Output.all(model.model_name, model.version, model.sha256, model.model_version_id).apply(
        lambda v: {"name": v[0], "version": v[1], "sha": v[2], "model_version_id": v[3]})


def model_name(model: Any) -> str:
    return model["name"] if isinstance(model, dict) else model if isinstance(model, str) else model.model_name


def _wire(ref: dict[str, Any]) -> dict[str, Any]:
    return {k: ref.get(k) for k in ("name", "version", "sha")}


class RolloutStep:
    """A step over several models; `steps()` gives its definition steps (Pulumi inputs)."""

    def models(self) -> list[Any]:
        raise NotImplementedError

    def build(self, refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def steps(self) -> list[Any]:
        built = pulumi.Output.all(*[model_ref(m) for m in self.models()]).apply(lambda refs: self.build(list(refs)))
        return [built[i] for i in range(len(self.build([{}] * len(self.models()))))]


class RandomSplit(RolloutStep):
    """Each row to one model, by weight: `RandomSplit({stable: 90, canary: 10}, hash_key="user_id")`.
    A `hash_key` column makes it sticky: the same value, the same model, while the weights stay."""

    def __init__(self, weights: Mapping[Any, float] | Sequence[tuple[Any, float]], hash_key: str | None = None) -> None:
        pairs = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
        if not pairs:
            raise ValueError("RandomSplit: give at least one model and its weight")
        for model, weight in pairs:
            if not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"RandomSplit: the weight of {model_name(model)!r} must be a number >= 0, got {weight!r}")
        if sum(w for _, w in pairs) <= 0:
            raise ValueError("RandomSplit: the weights add up to 0; give at least one model a weight > 0")
        self.pairs = pairs
        self.hash_key = hash_key

    def models(self) -> list[Any]:
        return [m for m, _ in self.pairs]

    def build(self, refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"RandomSplit": {"hash_key": self.hash_key, "weights": [
            {"model": _wire(r), "weight": float(w)} for r, (_, w) in zip(refs, self.pairs, strict=True)]}}]


class KeySplit(RolloutStep):
    """Each row to the model its `key` column's value routes to, `control` for any other value
    (Wallaroo's `MetaValueSplit`, the SDK's `add_key_split`)."""

    def __init__(self, key: str, control: Any, routes: Mapping[str, Any]) -> None:
        if not key:
            raise ValueError("KeySplit: key names the input column whose value picks the model")
        self.key, self.control, self.routes = key, control, dict(routes)

    def models(self) -> list[Any]:
        return [self.control, *self.routes.values()]

    def build(self, refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"MetaValueSplit": {"split_key": self.key, "control": _wire(refs[0]),
                                    "routes": {k: _wire(r) for k, r in zip(self.routes, refs[1:], strict=True)}}}]


class Shadow(RolloutStep):
    """Every row to the champion and each challenger; the champion answers, the challengers'
    answers are only logged (`out_<model>.<field>`), as the SDK's `add_shadow_deploy`."""

    def __init__(self, champion: Any, challengers: Iterable[Any]) -> None:
        self.champion, self.challengers = champion, list(challengers)
        if not self.challengers:
            raise ValueError("Shadow: give at least one challenger (a shadow of none is a plain model step)")

    def models(self) -> list[Any]:
        return [self.champion, *self.challengers]

    def build(self, refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"ModelInference": {"models": [_wire(r) for r in refs]}}, *SHADOW_TAIL]


class Fallback(RolloutStep):
    """Each row to the first model, then to the next for rows that failed in one of the `on`
    ways (default: timeout, 429, 5xx, connection, step_error), until one answers."""

    def __init__(self, models: Sequence[Any], on: Sequence[str] | None = None) -> None:
        self.chain = list(models)
        if not self.chain:
            raise ValueError("Fallback: give at least one model")
        self.on = list(on) if on is not None else ["timeout", "429", "5xx", "connection", "step_error"]
        bad = [o for o in self.on if o not in FALL_THROUGH]
        if bad:
            raise ValueError(f"Fallback: on {bad} not understood; choose from {', '.join(FALL_THROUGH)}")

    def models(self) -> list[Any]:
        return list(self.chain)

    def build(self, refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"Fallback": {"models": [_wire(r) for r in refs], "on": list(self.on)}}]


def definition_steps(steps: Sequence[Any]) -> list[Any]:
    """A pipeline's `steps` input: a model becomes its {name, version, sha, ...} ref, a rollout
    step its definition steps."""
    out: list[Any] = []
    for step in steps:
        out += step.steps() if isinstance(step, RolloutStep) else [model_ref(step)]
    return out


def models_of(steps: Sequence[Any]) -> list[Any]:
    """Every model the steps name (a sidekick each)."""
    return [m for s in steps for m in (s.models() if isinstance(s, RolloutStep) else [s])]


__all__ = ["STEP_KINDS", "Fallback", "KeySplit", "RandomSplit", "RolloutStep", "Shadow", "definition_steps", "models_of",
           "refs_in"]
