"""`Call`: one checked OpenAI call on a serving pipeline, as the service and its streamed pieces
see it (its own module, so the pieces need not import the service)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from wallaroo_pulumi.adapters.schemas import OPENAI_FIELD
from wallaroo_pulumi.runtime.engine.state import DeploymentState, Live
from wallaroo_pulumi.runtime.services.guardrails.screen import Finding, Guard
from wallaroo_pulumi.runtime.services.inference import Inference
from wallaroo_pulumi.runtime.services.openai_api.requests import ChatRequest, CompletionRequest, Kind, prompt_of
from wallaroo_pulumi.runtime.services.routing import CallFor
from wallaroo_pulumi.runtime.wire.openai_shapes import Answer


@dataclass
class Call:
    """One checked OpenAI call on a serving pipeline."""

    kind: Kind
    pipeline: str
    state: DeploymentState
    live: Live
    request: ChatRequest | CompletionRequest
    answer: Answer
    guard: Guard | None = None
    findings: list[Finding] = field(default_factory=list)

    def route_keys(self) -> dict[str, list[Any]]:
        """A split's `hash_key` / `split_key` on an OpenAI call: the request's top-level field of that name (`user`)."""
        fields = self.request.model_dump()
        return {stage.route_key: [fields.get(stage.route_key)] for stage in self.live.stages if stage.route_key}

    def model_call(self, inference: Inference) -> CallFor:
        """How each stage runs its models; the first gets the call as it is (`text` + `openai_request`)."""
        return lambda index: inference.model_call(self.pipeline, self.live, index, as_is=index == 0)

    def inputs(self) -> pa.Table:
        return pa.table({"text": pa.array([prompt_of(self.request)], pa.string()),
                         OPENAI_FIELD: pa.array([self.request.call().to_json()], pa.string())})
