"""Sentiment: VADER, a rule-based model whose lexicon ships in ``vaderSentiment``. English only."""

from __future__ import annotations

import threading

import numpy as np

_lock = threading.Lock()
_analyzer = None


def analyzer():
    global _analyzer
    if _analyzer is None:
        with _lock:
            if _analyzer is None:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

                _analyzer = SentimentIntensityAnalyzer()
    return _analyzer


def polarity(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(compound -1..1, negative 0..1) per text."""
    a = analyzer()
    n = len(texts)
    compound = np.empty(n, dtype=np.float64)
    negative = np.empty(n, dtype=np.float64)
    for i, t in enumerate(texts):
        s = a.polarity_scores(t)
        compound[i] = s["compound"]
        negative[i] = s["neg"]
    return compound, negative


def score(texts: list[str]) -> dict[str, np.ndarray]:
    compound, negative = polarity(texts)
    return {"sentiment_compound": compound, "sentiment_negative": negative}
