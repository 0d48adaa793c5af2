"""The example's model: y = 2x. Copy the folder and change the factor for a new version."""

from mac.config.inference import CustomInferenceConfig
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder
from mac.types import InferenceData

FACTOR = 2.0


class Scorer(Inference):
    @property
    def expected_model_types(self) -> set:
        return {float}

    @Inference.model.setter  # type: ignore[attr-defined]
    def model(self, model: float) -> None:
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def _predict(self, input_data: InferenceData) -> InferenceData:
        return {"y": input_data["x"] * self._model}


class ScorerBuilder(InferenceBuilder):
    @property
    def inference(self) -> Scorer:
        return Scorer()

    def create(self, config: CustomInferenceConfig) -> Scorer:
        inference = self.inference
        inference.model = FACTOR
        return inference
