"""Toxicity listener (Wallaroo BYOP, framework ``custom``).

Scores a text column with ``wallaroo_pulumi.scorers.score_toxicity`` (model: alt-profanity-check's calibrated linear SVM) and returns
``toxicity`` as float64. The scorer package is installed in the runtime; its models ship inside
their PyPI packages, so nothing is downloaded.

Input:  ``text`` (string), or the column named by the env var ``LISTENER_TEXT_FIELD``.
Output: ``toxicity`` (float64), one row per input row.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mac.config.inference import CustomInferenceConfig
from mac.exceptions import InferenceDataValidationError
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder
from mac.types import InferenceData
from wallaroo_pulumi.scorers import Scorer, get_scorer

SCORER = "toxicity"


class ToxicityListener(Inference):
    @property
    def expected_model_types(self) -> set[Any]:
        return {Scorer}

    @Inference.model.setter  # type: ignore[attr-defined]
    def model(self, model: Any) -> None:
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def _predict(self, input_data: InferenceData) -> InferenceData:
        field = os.environ.get("LISTENER_TEXT_FIELD", "text") or "text"
        if field not in input_data:
            raise InferenceDataValidationError(
                f"input field {field!r} (string) is missing: got {sorted(input_data)}; "
                "set LISTENER_TEXT_FIELD to name the text column"
            )
        texts = np.asarray(input_data[field]).reshape(-1).tolist()
        bad = next((i for i, t in enumerate(texts) if t is not None and not isinstance(t, (str, bytes))), None)
        if bad is not None:
            raise InferenceDataValidationError(
                f"input field {field!r} must hold strings: row {bad} is {type(texts[bad]).__name__}"
            )
        texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts]
        scores = self._model(texts)
        return {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}


class ToxicityListenerBuilder(InferenceBuilder):
    @property
    def inference(self) -> ToxicityListener:
        return ToxicityListener()

    def create(self, config: CustomInferenceConfig) -> ToxicityListener:
        inference = self.inference
        scorer = get_scorer(SCORER)
        scorer(["warm up"])  # load the model files now, not on the first request
        inference.model = scorer
        return inference
