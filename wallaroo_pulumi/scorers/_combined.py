"""The combined scorer: every column of toxicity, profanity, hate and sentiment in one pass."""

from __future__ import annotations

import numpy as np

from . import _hate, _profanity, _sentiment

PARTS = ("toxicity", "profanity", "hate", "sentiment")
"""The scorers whose columns it returns, in this order."""


def score(texts: list[str]) -> dict[str, np.ndarray]:
    """The parts' columns; the SVM runs once for both ``toxicity`` and ``profanity_prob``."""
    svm = _profanity.svm_proba(texts)
    p = _hate.predict_proba(texts)
    compound, negative = _sentiment.polarity(texts)
    return {
        "toxicity": svm,
        "profanity": _profanity.contains(texts),
        "profanity_prob": svm.copy(),
        "hate": p[:, 0].copy(),
        "offensive": p[:, 1].copy(),
        "sentiment_compound": compound,
        "sentiment_negative": negative,
    }
