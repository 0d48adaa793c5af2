"""A pipeline definition's steps, as Wallaroo's SDK writes them, parsed into stages: one per
step, except a shadow deploy, whose three steps are one stage, and `Check` steps (validations),
which are no stage: they follow every model and are evaluated on the answer. Each step kind is its
own module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from wallaroo_pulumi.runtime.core.errors import BadRequest, describe_validation_error
from wallaroo_pulumi.runtime.wire.steps.check import Check
from wallaroo_pulumi.runtime.wire.steps.fallback import Fallback
from wallaroo_pulumi.runtime.wire.steps.key_split import MetaValueSplit
from wallaroo_pulumi.runtime.wire.steps.model_inference import ModelInference
from wallaroo_pulumi.runtime.wire.steps.model_ref import ModelRef
from wallaroo_pulumi.runtime.wire.steps.random_split import RandomSplit
from wallaroo_pulumi.runtime.wire.steps.shadow import AuditResults, MultiOut

StageKind = Literal["model", "random_split", "key_split", "shadow", "fallback"]
KINDS: dict[str, type[BaseModel]] = {"ModelInference": ModelInference, "RandomSplit": RandomSplit,
                                     "MetaValueSplit": MetaValueSplit, "Fallback": Fallback,
                                     "AuditResults": AuditResults, "MultiOut": MultiOut, "Check": Check}
STAGE_OF: dict[type[BaseModel], StageKind] = {RandomSplit: "random_split", MetaValueSplit: "key_split", Fallback: "fallback"}

__all__ = ["Check", "Fallback", "MetaValueSplit", "ModelInference", "ModelRef", "RandomSplit", "Stage", "check_steps",
           "parse_steps", "model_refs"]


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline: its kind, its parsed step, and each model it names (where, ref)."""

    kind: StageKind
    step: ModelInference | RandomSplit | MetaValueSplit | Fallback
    refs: list[tuple[str, ModelRef]]

    def wire(self, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The stage's definition steps with `models` (resolved, in `refs` order) in place."""
        steps = [self.step.wire(models)]
        if self.kind == "shadow":
            steps += [AuditResults(**{"from": 1}).wire(), MultiOut().wire()]
        return steps


def _one(raw: Any, where: str) -> BaseModel:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise BadRequest(f"{where}: expected an object with one step kind ({', '.join(KINDS)}), got {raw!r:.80}")
    [(kind, body)] = raw.items()
    cls = KINDS.get(kind)
    if cls is None:
        raise BadRequest(f"{where}: step kind {kind!r} is not served by this runtime; it serves {', '.join(KINDS)}")
    try:
        return cls.model_validate(body if body is not None else {})
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc, f"{where}.{kind}")) from None


def _is_shadow_tail(tail: list[BaseModel]) -> bool:
    """`AuditResults {from: 1}` then `MultiOut`: what follows a shadow's models."""
    return (len(tail) == 2 and isinstance(tail[0], AuditResults) and isinstance(tail[1], MultiOut)
            and tail[0].from_ == 1 and tail[0].to is None)


def parse_steps(raw: list[Any]) -> list[Stage]:
    """Stages of a definition's `steps`; BadRequest naming the step and field that is wrong."""
    if not isinstance(raw, list):
        raise BadRequest(f"definition.steps: expected a list of steps, got {type(raw).__name__}")
    parsed = [_one(step, f"definition.steps[{i}]") for i, step in enumerate(raw)]
    stages: list[Stage] = []
    i = 0
    while i < len(parsed):
        step, where = parsed[i], f"definition.steps[{i}]"
        if isinstance(step, Check):
            if any(not isinstance(later, Check) for later in parsed[i + 1:]):
                raise BadRequest(f"{where}: a Check step (validations) must come after every model step; "
                                 "the runtime evaluates validations on the pipeline's answer")
            i += 1
            continue
        if isinstance(step, ModelInference) and len(step.models) > 1:
            if not _is_shadow_tail(parsed[i + 1:i + 3]):
                raise BadRequest(f"{where}.ModelInference.models: several models in one step are served as a shadow "
                                 "deploy only: follow it with AuditResults {from: 1} and MultiOut {} "
                                 "(the SDK's add_shadow_deploy writes exactly that)")
            stages.append(Stage("shadow", step, step.refs(where)))
            i += 3
            while _is_shadow_tail(parsed[i:i + 2]):  # the SDK's replace_with_shadow_deploy on a shadow adds a
                i += 2                               # second pair, which audits nothing more: one shadow
            continue
        if isinstance(step, (AuditResults, MultiOut)):
            raise BadRequest(f"{where}: {type(step).__name__} is served only as part of a shadow deploy, right after "
                             "a ModelInference of several models (add_shadow_deploy)")
        assert isinstance(step, (ModelInference, RandomSplit, MetaValueSplit, Fallback))
        try:
            refs = step.refs(where)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        stages.append(Stage(STAGE_OF.get(type(step), "model"), step, refs))
        i += 1
    return stages


def model_refs(raw: list[Any]) -> list[dict[str, Any]]:
    """Every model a stored definition names, stage by stage, in order (one sidekick each)."""
    return [ref.model_dump(exclude_none=True) for stage in parse_steps(raw) for _, ref in stage.refs]


def check_steps(raw: list[Any]) -> list[Check]:
    """The `Check` steps of a definition (validations), in order."""
    return [step for step in (_one(s, f"definition.steps[{i}]") for i, s in enumerate(raw)) if isinstance(step, Check)]
