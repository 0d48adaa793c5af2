"""``from mac.inference import Inference`` — the base class of BYOP inferences."""

from mac.inference.inference import Inference

__all__ = ["Inference"]
