"""A pipeline's guardrail policies at work on one call (D45): the request's text before the first
step, the answer's text and scores after the last; each policy masks, replaces, refuses or only
logs, and every action is a `Finding` (for the log entry and /metrics). A refusal is a 400
naming the policy and the field."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from wallaroo_pulumi.guardrails import Guardrails, KeywordPolicy, PiiPolicy, ThresholdPolicy
from wallaroo_pulumi.runtime.core.errors import BadRequest
from wallaroo_pulumi.runtime.services.guardrails import pii

GUARDRAILS_COLUMN = "metadata.guardrails"
BOOKKEEPING = frozenset({"error", "finish_reason"})  # an LLM step's status columns: never text to check or replace


@dataclass(frozen=True)
class Finding:
    policy: str
    side: str
    field: str
    action: str  # refused | masked | replaced | logged
    found: str  # what fired, never the personal data itself


class Refused(BadRequest):
    """A guardrail policy refused the call."""

    source = "guardrail"

    def __init__(self, finding: Finding) -> None:
        where = "request" if finding.side == "request" else "answer"
        super().__init__(f"guardrail policy {finding.policy!r} refused the {where}: {finding.found} in field "
                         f"{finding.field!r}", policy=finding.policy, field=finding.field, param=finding.field,
                         error_code="guardrail_refused")
        self.finding = finding


def _words(phrases: list[str]) -> re.Pattern[str] | None:
    """Whole words or phrases, any case."""
    if not phrases:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True)) + r")(?!\w)",
                      re.IGNORECASE)


@dataclass
class _Keywords:
    policy: KeywordPolicy
    blocked: re.Pattern[str] | None = None
    patterns: list[re.Pattern[str]] = field(default_factory=list)
    blocked_topics: dict[str, re.Pattern[str]] = field(default_factory=dict)
    allowed_topics: dict[str, re.Pattern[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, policy: KeywordPolicy) -> _Keywords:
        def topics(found: dict[str, list[str]]) -> dict[str, re.Pattern[str]]:
            return {t: p for t, words in found.items() if (p := _words(words)) is not None}
        return cls(policy, _words(policy.blocked), [re.compile(p) for p in policy.patterns],
                   topics(policy.blocked_topics), topics(policy.allowed_topics))

    def spans(self, text: str) -> tuple[list[tuple[int, int]], str]:
        """(spans to mask, what fired) for the banned words, patterns and blocked topics."""
        spans, fired = [], []
        for label, pattern in ([("keyword", self.blocked)] if self.blocked else []) + [
                ("pattern", p) for p in self.patterns] + [(f"topic {t!r}", p) for t, p in self.blocked_topics.items()]:
            hits = [(m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start()]
            if hits:
                spans += hits
                fired.append(f"{label} {text[hits[0][0]:hits[0][1]]!r}" if label in ("keyword", "pattern") else label)
        return spans, ", ".join(fired)

    def off_topic(self, text: str) -> bool:
        return bool(self.allowed_topics) and not any(p.search(text) for p in self.allowed_topics.values())


def _mask_spans(text: str, spans: list[tuple[int, int]]) -> str:
    out, last = [], 0
    for start, end in sorted(spans):
        if start < last:
            start = last
        if end > start:
            out += [text[last:start], "[REDACTED]"]
            last = end
    return "".join(out) + text[last:]


class Guard:
    """The compiled policies of one pipeline."""

    def __init__(self, spec: Guardrails) -> None:
        self.spec = spec
        self.keywords = {p.name: _Keywords.of(p) for p in spec.policies if isinstance(p, KeywordPolicy)}

    @property
    def thresholds(self) -> bool:
        return any(isinstance(p, ThresholdPolicy) for p in self.spec.policies)

    @property
    def checks_response(self) -> bool:
        return any(isinstance(p, ThresholdPolicy) or "response" in p.on for p in self.spec.policies)

    def text(self, side: str, name: str, text: str, findings: list[Finding], log_only: bool = False) -> str:
        """`text` after every text policy of `side`; Refused on the first refusal. `log_only`: the text
        as a refused call's log entry keeps it, every PII policy's finds masked."""
        for policy in self.spec.policies:
            if isinstance(policy, ThresholdPolicy) or side not in policy.on or (log_only and not isinstance(policy, PiiPolicy)):
                continue
            if isinstance(policy, PiiPolicy):
                spans = pii.find(text, policy.entities, policy.phone_region)
                if not spans:
                    continue
                kinds: dict[str, int] = {}
                for s in spans:
                    kinds[s.entity] = kinds.get(s.entity, 0) + 1
                what = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in kinds.items())
                masked = pii.mask(text, spans)
            else:
                kw = self.keywords[policy.name]
                hits, what = kw.spans(text)
                if not hits and kw.off_topic(text):
                    what = f"none of the allowed topics ({', '.join(kw.allowed_topics)})"
                elif not hits:
                    continue
                masked = _mask_spans(text, hits)
            if log_only:
                text = masked
                continue
            action = {"mask": "masked", "refuse": "refused", "log": "logged"}[policy.action]
            finding = Finding(policy.name, side, name, action, what)
            findings.append(finding)
            if action == "refused":
                raise Refused(finding)
            if action == "masked":
                text = masked
        return text

    def scores(self, row: int, values: Callable[[str], object], findings: list[Finding]) -> str | None:
        """The threshold policies on one answer row's scores: the replacement text, if one fired;
        Refused on the first refusal."""
        replacement = None
        for policy in self.spec.policies:
            if not isinstance(policy, ThresholdPolicy):
                continue
            score = values(policy.score)
            if not isinstance(score, int | float) or isinstance(score, bool):
                continue
            over = score > policy.above if policy.above is not None else score < policy.below  # type: ignore[operator]
            if not over:
                continue
            bound = f"> {policy.above}" if policy.above is not None else f"< {policy.below}"
            action = {"refuse": "refused", "replace": "replaced", "log": "logged"}[policy.action]
            finding = Finding(policy.name, "response", policy.score, action, f"{policy.score} {score:.3g} {bound} (row {row})")
            findings.append(finding)
            if action == "refused":
                raise Refused(finding)
            if action == "replaced" and replacement is None:
                replacement = policy.message
        return replacement

    # -- tables (the Wallaroo inference path) --------------------------------------------------
    def _text_columns(self, table: pa.Table) -> list[str]:
        wanted = self.spec.fields
        return [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                if (f.name in wanted if wanted is not None else f.name not in BOOKKEEPING)]

    def table(self, side: str, table: pa.Table, findings: list[Finding], log_only: bool = False) -> pa.Table:
        """`table` (the inputs, or the answer) after the policies of `side` (see `text` for `log_only`)."""
        texts = self._text_columns(table)
        thresholds = side == "response" and not log_only and any(isinstance(p, ThresholdPolicy) for p in self.spec.policies)
        rows = table.to_pylist() if texts or thresholds else []
        changed = set()
        for i, row in enumerate(rows):
            for name in texts:
                if isinstance(row[name], str):
                    new = self.text(side, name, row[name], findings, log_only)
                    if new != row[name]:
                        row[name], _ = new, changed.add(name)
            if thresholds and (message := self.scores(i, lambda c, r=row: r.get(c), findings)) is not None:
                for name in texts:
                    row[name], _ = message, changed.add(name)
        for name in changed:
            index = table.schema.get_field_index(name)
            table = table.set_column(index, table.schema.field(index), pa.array([r[name] for r in rows], table.schema.field(index).type))
        return table


def annotate(logged: pa.Table, findings: list[Finding]) -> pa.Table:
    """The log entry with what each policy did (JSON list per row, the same for the call's rows)."""
    value = json.dumps([asdict(f) for f in findings], separators=(",", ":"))
    return logged.append_column(GUARDRAILS_COLUMN, pa.array([value] * logged.num_rows, pa.string()))
