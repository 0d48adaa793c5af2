"""Guardrails on an OpenAI call (D45): the request's messages screened before the LLM step, and
a streamed answer let through in checked batches: every `check_every` pieces the text so far is
screened (and scored by the pipeline's later steps, for threshold policies) before the batch goes
out, so no piece reaches the caller unchecked; the first policy that fires cuts the stream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pyarrow as pa

from wallaroo_pulumi.runtime.services.guardrails.screen import Finding, Guard, Refused
from wallaroo_pulumi.runtime.services.openai_api.requests import ChatRequest, CompletionRequest

Scorer = Callable[[str], Awaitable[pa.Table | None]]
"""The pipeline's later steps on an answer text so far (None: nothing to score with)."""


def screen_request(request: ChatRequest | CompletionRequest, guard: Guard, findings: list[Finding],
                   log_only: bool = False) -> None:
    """Each message's text (or the prompt) through the request policies, in place; Refused naming the field."""
    if isinstance(request, CompletionRequest):
        if isinstance(request.prompt, str):
            request.prompt = guard.text("request", "prompt", request.prompt, findings, log_only)
        else:
            request.prompt = [guard.text("request", "prompt[0]", request.prompt[0], findings, log_only)]
        return
    for i, message in enumerate(request.messages):
        if isinstance(message.content, str):
            message.content = guard.text("request", f"messages[{i}].content", message.content, findings, log_only)
        elif isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part.get("text"), str):
                    part["text"] = guard.text("request", f"messages[{i}].content[{j}].text", part["text"], findings, log_only)


def answer_table(schema: pa.Schema, text: str) -> pa.Table:
    """One answer row of the LLM step's output schema: `text` as generated_text, nothing else known."""
    return pa.table({f.name: pa.array([text] if f.name == "generated_text" else [None], f.type) for f in schema}, schema=schema)


def score_of(table: pa.Table | None) -> Callable[[str], object]:
    return lambda column: table.column(column)[0].as_py() if table is not None and column in table.column_names else None


async def fired(guard: Guard, text: str, score: Scorer) -> Finding | None:
    """The first policy that would change or refuse the answer `text` so far (log-only ones do not count)."""
    scratch: list[Finding] = []
    try:
        if guard.text("response", "generated_text", text, scratch) != text:
            return next(f for f in scratch if f.action != "logged")
        if guard.thresholds:
            if guard.scores(0, score_of(await score(text)), scratch) is not None:
                return next(f for f in scratch if f.action == "replaced")
    except Refused as exc:
        return exc.finding
    return None


def cut(finding: Finding, pieces: int) -> Finding:
    """The finding as the log tells it: the stream was cut."""
    return Finding(finding.policy, finding.side, finding.field, finding.action,
                   f"{finding.found}; stream cut after {pieces} piece{'s' if pieces != 1 else ''}")


def event(finding: Finding) -> dict[str, str]:
    """What the final chunk of a cut stream says (our `wallaroo.guardrail`)."""
    return {"policy": finding.policy, "action": finding.action, "field": finding.field, "found": finding.found}
