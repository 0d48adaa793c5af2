"""`Step`: one model of a live pipeline version and the pool of sidekicks that serves it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick.steps import StepPool


@dataclass
class Step:
    name: str
    model_name: str
    model_version: str
    model_version_id: int
    sha: str
    input_schema: pa.Schema
    output_schema: pa.Schema
    pool: StepPool
    same_as: str = field(default="", repr=False)  # what the pool runs, all of it (see `_spare_pools`)

    @cached_property  # per request in the log row; its fields never change
    def last_model(self) -> str:
        return json.dumps({"model_name": self.model_name, "model_sha": self.sha})
