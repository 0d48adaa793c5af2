"""BYOP model sources for tests and benchmarks: a mac `Inference` with the given `_predict`.

    folder.joinpath("model.py").write_text(byop_source('return {"y": input_data["x"] * 2.0}'))
"""

from __future__ import annotations

import textwrap
from typing import Any

MODEL_HEADER = '''
import json
import os
import numpy as np
from mac.config.inference import CustomInferenceConfig
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder
from mac.types import InferenceData
'''


INFERENCE_CLASS = """
class {cls}(Inference):
    @property
    def expected_model_types(self):
        return {{{types}}}

    @Inference.model.setter
    def model(self, model):
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def _predict(self, input_data: InferenceData):
{predict}
"""
"""A mac `Inference` subclass: `.format(cls=..., predict=..., types=...)` with `predict` indented 8
spaces and `types` the model's types (`dict`: what the builders below hand it)."""


def block(code: str, indent: int) -> str:
    """`code` dedented and indented by `indent` spaces (`pass` when empty)."""
    return textwrap.indent(textwrap.dedent(code).strip() or "pass", " " * indent)


def byop_source(predict_body: str, *, load_body: str = "", inference_cls: str = "TestInference") -> str:
    """A mac-style BYOP module: an Inference subclass with `_predict` and a builder."""
    return (
        MODEL_HEADER
        + "\n"
        + INFERENCE_CLASS.format(cls=inference_cls, predict=block(predict_body, 8), types="dict")
        + f"""

class TestBuilder(InferenceBuilder):
    @property
    def inference(self):
        return {inference_cls}()

    def create(self, config: CustomInferenceConfig):
{block(load_body, 8)}
        inference = self.inference
        inference.model = {{"model_path": str(config.model_path)}}
        return inference
"""
    )


def inference_class(cls: str, predict_body: str, model_types: str = "dict") -> type[Any]:
    """The template's `Inference` subclass itself, for a test in this process: `cls` whose model
    must be one of `model_types` and whose `_predict` runs `predict_body`."""
    namespace: dict[str, Any] = {"__name__": "byop_model"}
    source = MODEL_HEADER + INFERENCE_CLASS.format(cls=cls, predict=block(predict_body, 8), types=model_types)
    exec(compile(source, f"<byop {cls}>", "exec"), namespace)  # noqa: S102 - the test's own template
    return namespace[cls]
