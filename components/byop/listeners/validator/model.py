"""In-line validation listener (Wallaroo BYOP, framework ``custom``).

Put it after the LLM step (``[llm, validator]``): it passes ``generated_text`` through and adds
every score column of ``wallaroo_pulumi.scorers.score_all`` (toxicity, profanity,
profanity_prob, hate, offensive, sentiment_compound, sentiment_negative; float64), so the
pipeline answers with the text and its scores in one call.

Input:  ``generated_text`` (string).
Output: ``generated_text`` (string) + the score columns (float64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mac.config.inference import CustomInferenceConfig
from mac.exceptions import InferenceDataValidationError
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder
from mac.types import InferenceData
from wallaroo_pulumi.scorers import Scorer, get_scorer

FIELD = "generated_text"


class ValidatorListener(Inference):
    @property
    def expected_model_types(self) -> set[Any]:
        return {Scorer}

    @Inference.model.setter  # type: ignore[attr-defined]
    def model(self, model: Any) -> None:
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def _predict(self, input_data: InferenceData) -> InferenceData:
        if FIELD not in input_data:
            raise InferenceDataValidationError(
                f"input field {FIELD!r} (string) is missing: got {sorted(input_data)}"
            )
        texts = np.asarray(input_data[FIELD]).reshape(-1).tolist()
        bad = next((i for i, t in enumerate(texts) if t is not None and not isinstance(t, (str, bytes))), None)
        if bad is not None:
            raise InferenceDataValidationError(
                f"input field {FIELD!r} must hold strings: row {bad} is {type(texts[bad]).__name__}"
            )
        texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else ("" if t is None else t) for t in texts]
        out: dict[str, np.ndarray] = {FIELD: np.asarray(texts, dtype=object)}
        for k, v in self._model(texts).items():
            out[k] = np.asarray(v, dtype=np.float64)
        return out


class ValidatorListenerBuilder(InferenceBuilder):
    @property
    def inference(self) -> ValidatorListener:
        return ValidatorListener()

    def create(self, config: CustomInferenceConfig) -> ValidatorListener:
        inference = self.inference
        scorer = get_scorer("combined")
        scorer(["warm up"])
        inference.model = scorer
        return inference
