"""Each pipeline's guardrail policies: stored with the pipeline (a change applies to the next call,
no redeploy, no version), compiled once, re-read at most once a second so that replicas on other
hosts follow a change; what they did is counted in /metrics."""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError

from wallaroo_pulumi.guardrails import Guardrails
from wallaroo_pulumi.runtime.core.errors import BadRequest, describe_validation_error
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.services.guardrails.screen import Finding, Guard
from wallaroo_pulumi.runtime.services.pipelines import Pipelines
from wallaroo_pulumi.runtime.store.db import Database

REFRESH_S = 1.0


class GuardrailPolicies:
    def __init__(self, db: Database, pipelines: Pipelines, metrics: Metrics) -> None:
        self.db = db
        self.pipelines = pipelines
        self.actions = Counter(
            "wallaroo_guardrail_actions_total",
            "What guardrail policies did to calls: refused, masked, replaced or logged, by pipeline, policy and side",
            ["pipeline", "policy", "action", "side"], registry=metrics.registry,
        )
        self._guards: dict[str, tuple[float, str | None, Guard | None]] = {}

    def set(self, name: str, workspace_id: int, spec: dict[str, Any] | None) -> dict[str, Any]:
        """Replace a pipeline's policies (None or no policies: none)."""
        pipeline = self.pipelines.find(None, name, workspace_id)
        parsed = None
        if spec is not None:
            try:
                parsed = Guardrails.model_validate(spec)
            except ValidationError as exc:
                raise BadRequest(describe_validation_error(exc, "guardrails")) from None
        text = parsed.model_dump_json() if parsed is not None and parsed.policies else None
        with self.db.tx() as c:
            c.execute("UPDATE pipelines SET guardrails = ? WHERE id = ?", (text, pipeline["id"]))
        self._guards.pop(name, None)
        return self.view(pipeline["name"], pipeline["workspace_id"], text)

    def get(self, name: str, workspace_id: int) -> dict[str, Any]:
        pipeline = self.pipelines.find(None, name, workspace_id)
        return self.view(pipeline["name"], pipeline["workspace_id"], pipeline.get("guardrails"))

    @staticmethod
    def view(name: str, workspace_id: int, text: str | None) -> dict[str, Any]:
        return {"pipeline_id": name, "workspace_id": workspace_id, "guardrails": json.loads(text) if text else None}

    def guard(self, pipeline_name: str) -> Guard | None:
        """The pipeline's compiled policies, or None: read from the store at most once a second."""
        now = time.monotonic()
        cached = self._guards.get(pipeline_name)
        if cached is not None and now - cached[0] < REFRESH_S:
            return cached[2]
        row = self.pipelines.by_name(pipeline_name)
        text = row.get("guardrails") if row else None
        guard = cached[2] if cached is not None and cached[1] == text else (
            Guard(Guardrails.model_validate_json(text)) if text else None)
        self._guards[pipeline_name] = (now, text, guard)
        return guard

    def count(self, pipeline: str, findings: list[Finding]) -> None:
        for f in findings:
            self.actions.labels(pipeline, f.policy, f.action, f.side).inc()
