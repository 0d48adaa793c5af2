"""Text scorers for LLM listeners, each backed by a model that ships inside its PyPI package.

Batch API: every scorer takes ``texts: list[str]`` and returns ``dict[column, np.ndarray]``
(float64, one value per text). Models load lazily, once per process, thread-safely; nothing is
ever downloaded. ``None`` / non-string items are scored as ``str(item)`` (``None`` → ``""``).

=====================  ==========================================  ===========  ======================
column                 model                                       range        meaning (higher = …)
=====================  ==========================================  ===========  ======================
toxicity               alt-profanity-check calibrated LinearSVC    0..1         more likely toxic/offensive
profanity              better-profanity word list (+ leetspeak)    0 or 1       contains a listed word
profanity_prob         alt-profanity-check (same model)            0..1         = toxicity
hate                   HateSonar TF-IDF + logistic regression      0..1         P(hate speech)
offensive              HateSonar (same model)                      0..1         P(offensive, not hate)
sentiment_compound     VADER                                       -1..1        more positive
sentiment_negative     VADER                                       0..1         share of negative tone
=====================  ==========================================  ===========  ======================

See ``docs/listeners.md`` for the limits of each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from . import _hate, _profanity, _sentiment

__all__ = [
    "SCORERS",
    "Scorer",
    "columns_for",
    "get_scorer",
    "score",
    "score_all",
    "score_hate",
    "score_profanity",
    "score_sentiment",
    "score_toxicity",
    "warm_up",
]

Scores = dict[str, np.ndarray]


def _texts(texts: Sequence) -> list[str]:
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    return ["" if t is None else (t if isinstance(t, str) else str(t)) for t in texts]


def score_toxicity(texts: Sequence[str]) -> Scores:
    t = _texts(texts)
    return {"toxicity": _profanity.svm_proba(t)}


def score_profanity(texts: Sequence[str]) -> Scores:
    t = _texts(texts)
    return {"profanity": _profanity.contains(t), "profanity_prob": _profanity.svm_proba(t)}


def score_hate(texts: Sequence[str]) -> Scores:
    t = _texts(texts)
    p = _hate.predict_proba(t)
    return {"hate": p[:, 0].copy(), "offensive": p[:, 1].copy()}


def score_sentiment(texts: Sequence[str]) -> Scores:
    t = _texts(texts)
    compound, negative = _sentiment.polarity(t)
    return {"sentiment_compound": compound, "sentiment_negative": negative}


def score_all(texts: Sequence[str]) -> Scores:
    t = _texts(texts)
    svm = _profanity.svm_proba(t)
    p = _hate.predict_proba(t)
    compound, negative = _sentiment.polarity(t)
    return {
        "toxicity": svm,
        "profanity": _profanity.contains(t),
        "profanity_prob": svm.copy(),
        "hate": p[:, 0].copy(),
        "offensive": p[:, 1].copy(),
        "sentiment_compound": compound,
        "sentiment_negative": negative,
    }


class Scorer:
    def __init__(self, name: str, fn: Callable[[Sequence[str]], Scores], columns: tuple[str, ...]):
        self.name, self.fn, self.columns = name, fn, columns

    def __call__(self, texts: Sequence[str]) -> Scores:
        return self.fn(texts)

    def __repr__(self) -> str:
        return f"Scorer({self.name!r}, columns={self.columns})"


SCORERS: dict[str, Scorer] = {
    "toxicity": Scorer("toxicity", score_toxicity, ("toxicity",)),
    "profanity": Scorer("profanity", score_profanity, ("profanity", "profanity_prob")),
    "hate": Scorer("hate", score_hate, ("hate", "offensive")),
    "sentiment": Scorer("sentiment", score_sentiment, ("sentiment_compound", "sentiment_negative")),
    "combined": Scorer(
        "combined",
        score_all,
        (
            "toxicity",
            "profanity",
            "profanity_prob",
            "hate",
            "offensive",
            "sentiment_compound",
            "sentiment_negative",
        ),
    ),
}


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}: expected one of {sorted(SCORERS)}") from None


def columns_for(name: str) -> tuple[str, ...]:
    return get_scorer(name).columns


def score(texts: Sequence[str], scorer: str = "combined") -> Scores:
    return get_scorer(scorer)(texts)


def warm_up(scorer: str = "combined") -> None:
    """Load the scorer's models now (a sidekick calls this at load time, not on first request)."""
    get_scorer(scorer)(["warm up"])
