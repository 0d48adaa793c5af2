"""Shared code of the listener BYOP models in ``components/byop/listeners/``.

Each listener folder's ``model.py`` stays valid Wallaroo BYOP (framework ``custom``): it defines
its own ``Inference`` subclass and its own concrete ``InferenceBuilder`` subclass, both a few
lines, on top of the bases here::

    from wallaroo_pulumi.scorers import byop

    class ToxicityListener(byop.ScorerInference):
        scorer = "toxicity"

    class ToxicityListenerBuilder(byop.ScorerInferenceBuilder):
        inference_class = ToxicityListener

Import the module (``from wallaroo_pulumi.scorers import byop``), not the classes: then the
model module's namespace holds exactly one ``InferenceBuilder`` subclass, its own, whichever way a
loader searches it (ours only counts classes defined in the model folder).

``ScorerInference`` scores one text column with the scorer named by ``scorer`` (see
:data:`wallaroo_pulumi.scorers.SCORERS`) and returns its float64 score columns. Its knobs:

- ``text_field``: the input column (default ``text``);
- ``text_field_env``: the env var that may rename it (default ``LISTENER_TEXT_FIELD``; ``None``
  to fix the column);
- ``pass_through``: also return the text column (``None`` as ``""``) and every other input
  column before the scores, as the in-line validator does (so an LLM step's ``error`` and
  token columns reach the answer when the validator's schema declares them).
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

from . import Scorer, get_scorer

__all__ = ["ScorerInference", "ScorerInferenceBuilder"]


class ScorerInference(Inference):
    """A listener: scores a text column with the ``scorer`` named by the subclass."""

    scorer: ClassVar[str] = ""
    text_field: ClassVar[str] = "text"
    text_field_env: ClassVar[str | None] = "LISTENER_TEXT_FIELD"
    pass_through: ClassVar[bool] = False

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

    def _predict(self, input_data: InferenceData) -> InferenceData:
        field = self.field()
        texts = self.texts(input_data, field)
        out: dict[str, np.ndarray] = {}
        if self.pass_through:  # the text first, then whatever else the step declared it takes
            texts = ["" if t is None else t for t in texts]
            out[field] = np.asarray(texts, dtype=object)
            out.update((k, v) for k, v in input_data.items() if k != field)
        for k, v in self._model(texts).items():
            out[k] = np.asarray(v, dtype=np.float64)
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
