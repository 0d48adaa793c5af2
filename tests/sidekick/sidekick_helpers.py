"""Helpers: BYOP model folders written as real files, in the style of Wallaroo's docs.

Each fixture model is a ``main.py`` with a ``mac.inference.Inference`` subclass
(``expected_model_types``, ``@Inference.model.setter``, ``_predict``) and an
``InferenceBuilder`` subclass. ``write_model`` fills in the ``_predict`` body
and the builder's style (``inference`` returning the class or an instance).
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick import SidekickSpec
from wallaroo_pulumi.testing.byop import INFERENCE_CLASS

T = TypeVar("T")

HEADER = '''\
import os
import sys
import time

import numpy as np

from mac.config.inference import CustomInferenceConfig
from mac.exceptions import InferenceDataValidationError
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder
from mac.types import InferenceData
'''

BUILDER_CLASS = '''
class {cls}Builder(InferenceBuilder):
    @property
    def inference(self):
        return {cls}

    def create(self, config: CustomInferenceConfig) -> {cls}:
{create}        inference = self.inference()
        inference.model = {{"path": str(config.model_path)}}
        return inference
'''

BUILDER_INSTANCE = '''
class {cls}Builder(InferenceBuilder):
    @property
    def inference(self) -> {cls}:
        return {cls}()

    def create(self, config: CustomInferenceConfig) -> {cls}:
{create}        inference = self.inference
        inference.model = {{"path": str(config.model_path)}}
        return inference
'''


def write_model(
    folder: Path,
    predict: str,
    *,
    builder: str = "class",
    create: str = "",
    prelude: str = "",
    cls: str = "MyInference",
    filename: str = "main.py",
    with_builder: bool = True,
) -> Path:
    """Write a BYOP folder whose ``_predict`` body is ``predict`` (dedented, any indentation)."""
    folder.mkdir(parents=True, exist_ok=True)
    body = textwrap.indent(textwrap.dedent(predict).strip("\n"), " " * 8) + "\n"
    create_body = textwrap.indent(textwrap.dedent(create).strip("\n"), " " * 8) + "\n" if create.strip() else ""
    source = HEADER + textwrap.dedent(prelude) + INFERENCE_CLASS.format(cls=cls, predict=body, types="dict")
    if with_builder:
        template = BUILDER_CLASS if builder == "class" else BUILDER_INSTANCE
        source += template.format(cls=cls, create=create_body)
    (folder / filename).write_text(source)
    return folder


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 25.0) -> T:
    """Run one async scenario on a fresh event loop, bounded so a hang fails the test."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(bounded())


ModelFactory = Callable[..., Path]


def spec_for(folder: Path, name: str = "echo", **kwargs: object) -> SidekickSpec:
    return SidekickSpec(step_name=name, model_version="v1", model_dir=folder, **kwargs)  # type: ignore[arg-type]


def one_row(**columns: object) -> pa.Table:
    return pa.table({k: [v] for k, v in columns.items()})
