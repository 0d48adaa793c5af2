"""`Fallback`: rows to the first model; the rows whose answer failed in one of the `on` ways go
on to the next model, and so on. A row keeps the last answer it got (so a row that failed
everywhere answers with the last model's error); `served` says which model that was.

A failed row is read from the answer's `error` column (the LLM adapters' per-row error, e.g.
"openai: HTTP 429 Too Many Requests after 4 attempts: ...") and `finish_reason` column
(`content_filter`); a step that fails as a whole fails all its rows ("step_error")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.engine.stages.base import ModelCall, StageAnswer, concat_rows

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.engine.step import Step

PATTERNS = {
    "timeout": re.compile(r"timed out|timeout", re.IGNORECASE),
    "429": re.compile(r"\bHTTP 429\b"),
    "5xx": re.compile(r"\bHTTP 5\d\d\b"),
    "connection": re.compile(r"connection error", re.IGNORECASE),
    "content_filter": re.compile(r"content.filter|prompt blocked|refusal", re.IGNORECASE),
}


def failed_rows(answer: pa.Table, on: frozenset[str]) -> list[bool]:
    """Per row: did it fail in one of the `on` ways?"""
    rows = answer.num_rows
    errors = answer.column("error").to_pylist() if "error" in answer.column_names else [None] * rows
    finish = answer.column("finish_reason").to_pylist() if "finish_reason" in answer.column_names else [None] * rows
    out = []
    for error, reason in zip(errors, finish, strict=True):
        hit = "content_filter" in on and reason == "content_filter"
        if error and not hit:
            hit = any(PATTERNS[kind].search(error) for kind in on if kind in PATTERNS)
        out.append(bool(hit))
    return out


@dataclass
class FallbackStage:
    steps: list[Step]
    on: frozenset[str]
    route_key: str | None = None

    @property
    def name(self) -> str:
        return "fallback:" + ">".join(s.name for s in self.steps)

    async def run(self, table: pa.Table, _keys: dict[str, list[Any]], call: ModelCall) -> StageAnswer:
        rows = table.num_rows
        pending = list(range(rows))  # rows still looking for an answer, in row order
        kept: dict[int, tuple[int, pa.Table, int]] = {}  # row -> (model, answer table, its row there)
        served = [0] * rows
        error: WallarooError | None = None
        for k, step in enumerate(self.steps):
            last = k == len(self.steps) - 1
            try:
                answer = await call(step, table if len(pending) == rows else table.take(pending))
            except WallarooError as exc:
                if "step_error" not in self.on:
                    raise
                error = exc
                continue
            failed = failed_rows(answer, self.on) if not last else [False] * len(pending)
            still = []
            for i, row in enumerate(pending):
                kept[row] = (k, answer, i)
                served[row] = k
                if failed[i]:
                    still.append(row)
            pending = still
            if not pending:
                break
        if len(kept) < rows:  # some rows got no answer at all: the last model failed as a whole
            assert error is not None
            raise error
        return StageAnswer(self._assemble(kept, rows), served=served)

    @staticmethod
    def _assemble(kept: dict[int, tuple[int, pa.Table, int]], rows: int) -> pa.Table:
        tables: list[pa.Table] = []
        ids: dict[int, int] = {}
        picks: list[tuple[int, int]] = []
        for row in range(rows):
            _, answer, i = kept[row]
            t = ids.setdefault(id(answer), len(tables))
            if t == len(tables):
                tables.append(answer)
            picks.append((t, i))
        if len(tables) == 1:
            return tables[0].take([i for _, i in picks])
        offsets = [0]
        for t in tables:
            offsets.append(offsets[-1] + t.num_rows)
        return concat_rows(tables).take([offsets[t] + i for t, i in picks])
