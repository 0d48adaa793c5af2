"""Shared ``mac`` bases of the listener BYOP folders in ``components/byop/listeners/``.

A folder's ``model.py`` subclasses both in a few lines (``scorer = "toxicity"``; the builder names its
``inference_class``). Import the module, not the classes, so the folder's only builder is its own.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from mac.config.inference import CustomInferenceConfig
from mac.exceptions import InferenceDataValidationError
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder
from mac.types import InferenceData

from .registry import Scorer, get_scorer

__all__ = ["ScorerInference", "ScorerInferenceBuilder"]

#: The LLM step's error column (``LLM_OUTPUT_SCHEMA``): "" when its row succeeded.
ERROR_FIELD = "error"


class ScorerInference(Inference):
    """A listener: scores a text column with the ``scorer`` named by the subclass."""

    scorer: ClassVar[str] = ""  # a name in wallaroo_pulumi.scorers.SCORERS
    text_field: ClassVar[str] = "text"  # the input column
    text_field_env: ClassVar[str | None] = "LISTENER_TEXT_FIELD"  # the env var that may rename it; None fixes it
    pass_through: ClassVar[bool] = False  # also return the text (None as "") and the other input columns first

    @property
    def expected_model_types(self) -> set[Any]:
        return {Scorer}

    @Inference.model.setter  # type: ignore[attr-defined]
    def model(self, model: Any) -> None:
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def field(self) -> str:
        """The input text column: ``text_field``, or the env var ``text_field_env`` when set."""
        if self.text_field_env:
            return os.environ.get(self.text_field_env, self.text_field) or self.text_field
        return self.text_field

    def texts(self, input_data: InferenceData, field: str) -> list[Any]:
        """The column as a list of str (or None), or an InferenceDataValidationError naming it."""
        if field not in input_data:
            hint = f"; set {self.text_field_env} to name the text column" if self.text_field_env else ""
            raise InferenceDataValidationError(
                f"input field {field!r} (string) is missing: got {sorted(input_data)}{hint}"
            )
        texts = np.asarray(input_data[field]).reshape(-1).tolist()
        bad = next((i for i, t in enumerate(texts) if t is not None and not isinstance(t, (str, bytes))), None)
        if bad is not None:
            raise InferenceDataValidationError(
                f"input field {field!r} must hold strings: row {bad} is {type(texts[bad]).__name__}"
            )
        return [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts]

    def unscorable(self, input_data: InferenceData, texts: list[Any]) -> list[bool]:
        """Rows whose upstream call failed (when the step carries the LLM's ``error`` column, a
        non-empty error): their text ("") is not an answer, so they are not scored."""
        errors = input_data.get(ERROR_FIELD) if self.pass_through else None
        failed = [False] * len(texts)
        if errors is not None:
            for i, e in enumerate(np.asarray(errors, dtype=object).reshape(-1).tolist()):
                if isinstance(e, bytes):
                    e = e.decode("utf-8", "replace")
                if e is not None and str(e).strip():
                    failed[i] = True
        return failed

    def _predict(self, input_data: InferenceData) -> InferenceData:
        field = self.field()
        texts = self.texts(input_data, field)
        out: dict[str, np.ndarray] = {}
        failed = self.unscorable(input_data, texts) if self.pass_through else [False] * len(texts)
        if self.pass_through:  # the text first, then whatever else the step declared it takes
            texts = ["" if t is None else t for t in texts]
            out[field] = np.asarray(texts, dtype=object)
            out.update((k, v) for k, v in input_data.items() if k != field)
        if not any(failed):
            for k, v in self._model(texts).items():
                out[k] = np.asarray(v, dtype=np.float64)
            return out
        # A failed row is not scored: its scores are null and its error stays in the row.
        keep = [i for i, f in enumerate(failed) if not f]
        scores = self._model([texts[i] for i in keep]) if keep else {
            k: [] for k in self._model.columns}
        for k, v in scores.items():
            column = np.full(len(texts), None, dtype=object)
            for i, value in zip(keep, np.asarray(v, dtype=np.float64).tolist(), strict=True):
                column[i] = value
            out[k] = column
        return out


class ScorerInferenceBuilder(InferenceBuilder):
    """Builds ``inference_class`` with its scorer loaded (and warmed up: no load on the first request)."""

    inference_class: ClassVar[type[ScorerInference]]

    @property
    def inference(self) -> ScorerInference:
        cls = getattr(type(self), "inference_class", None)
        if not (isinstance(cls, type) and issubclass(cls, ScorerInference)):
            raise TypeError(f"{type(self).__name__}.inference_class: expected a ScorerInference subclass, got {cls!r}")
        return cls()

    def create(self, config: CustomInferenceConfig) -> ScorerInference:
        inference = self.inference
        if not inference.scorer:
            raise TypeError(f"{type(inference).__name__}.scorer: expected a scorer name, e.g. 'toxicity'")
        scorer = get_scorer(inference.scorer)
        scorer(["warm up"])  # load the model files now, not on the first request
        inference.model = scorer
        return inference
