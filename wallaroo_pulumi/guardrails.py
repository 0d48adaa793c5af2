"""Guardrail policies of a pipeline (ours, beyond Wallaroo; D45): what the runtime checks on the
request before the first step and on the answer after the last one. Shared by the provider
(`WallarooPipeline(guardrails=...)`) and the runtime (`pipelines/set_guardrails`)::

    Guardrails(policies=[
        PiiPolicy(name="no-pii", action="mask"),
        ThresholdPolicy(name="toxic", score="toxicity", above=0.8, action="replace", message="(withheld)"),
        KeywordPolicy(name="competitors", blocked=["acme corp"], action="refuse"),
    ])
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Side = Literal["request", "response"]
BOTH: list[Side] = ["request", "response"]
#: What the PII policy finds: by pattern, each confirmed by its checksum or format where one exists.
PII_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "ES_DNI", "IT_FISCAL_CODE",
                "IN_AADHAAR", "IP_ADDRESS", "SECRET")
PiiEntity = Literal["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "ES_DNI", "IT_FISCAL_CODE",
                    "IN_AADHAAR", "IP_ADDRESS", "SECRET"]
POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="names the policy in refusals, logs and /metrics")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not POLICY_NAME.match(v):
            raise ValueError("must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return v


class PiiPolicy(_Policy):
    """Personal data and secrets by pattern: mask each (`<EMAIL_ADDRESS>`), refuse the call, or log only."""

    kind: Literal["pii"] = "pii"
    action: Literal["mask", "refuse", "log"] = "mask"
    entities: list[PiiEntity] = Field(default_factory=lambda: list(PII_ENTITIES), min_length=1)
    on: list[Side] = Field(default_factory=lambda: list(BOTH), min_length=1)
    phone_region: str = Field(default="US", pattern=r"^[A-Z]{2}$",
                              description="where numbers written without +<country code> are dialled")


class ThresholdPolicy(_Policy):
    """A score of the answer (a validator step's output column, e.g. `toxicity`) above or below a bound."""

    kind: Literal["threshold"] = "threshold"
    score: str = Field(min_length=1, description="the output column holding the score")
    above: float | None = None
    below: float | None = None
    action: Literal["refuse", "replace", "log"] = "refuse"
    message: str | None = Field(default=None, description="with action 'replace': the text the answer becomes")

    @model_validator(mode="after")
    def _bound(self) -> ThresholdPolicy:
        if (self.above is None) == (self.below is None):
            raise ValueError("give one of above or below")
        if self.action == "replace" and not self.message:
            raise ValueError("action 'replace' needs a message (the text the answer becomes)")
        return self


class KeywordPolicy(_Policy):
    """Banned words or phrases (whole words, any case), regular expressions, and topics by keyword:
    `blocked_topics` refuse a text that mentions one, `allowed_topics` one that mentions none."""

    kind: Literal["keywords"] = "keywords"
    blocked: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list, description="Python regular expressions")
    blocked_topics: dict[str, list[str]] = Field(default_factory=dict)
    allowed_topics: dict[str, list[str]] = Field(default_factory=dict)
    action: Literal["refuse", "mask", "log"] = "refuse"
    on: list[Side] = Field(default_factory=lambda: list(BOTH), min_length=1)

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for i, pattern in enumerate(v):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"patterns[{i}] {pattern!r} is not a regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _something(self) -> KeywordPolicy:
        if not (self.blocked or self.patterns or self.blocked_topics or self.allowed_topics):
            raise ValueError("give blocked, patterns, blocked_topics or allowed_topics")
        if self.action == "mask" and self.allowed_topics:
            raise ValueError("allowed_topics can refuse or log, not mask (there is nothing to mask)")
        return self


Policy = Annotated[PiiPolicy | ThresholdPolicy | KeywordPolicy, Field(discriminator="kind")]


class Guardrails(BaseModel):
    """A pipeline's policies, applied in order; the first refusal ends the call."""

    model_config = ConfigDict(extra="forbid")
    policies: list[Policy] = Field(default_factory=list)
    fields: list[str] | None = Field(
        default=None, description="the text columns checked (default: every string column of the input and of the answer)")
    streaming: Literal["check", "buffer"] = Field(
        default="check", description="check: a stream is checked as it goes and cut when a policy fires; "
                                     "buffer: the answer is checked whole, then streamed")
    check_every: int = Field(default=8, ge=1, le=1000, description="streamed pieces between two checks")

    @model_validator(mode="after")
    def _unique(self) -> Guardrails:
        names = [p.name for p in self.policies]
        if len(names) != len(set(names)):
            raise ValueError(f"policies: names must be unique, got {names}")
        return self
