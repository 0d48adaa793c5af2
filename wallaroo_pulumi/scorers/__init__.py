"""Text scorers for LLM listeners, each backed by a model that ships inside its PyPI package.

Every scorer takes ``texts`` and returns ``dict[column, np.ndarray]`` (float64, one value per text;
``None`` scores as ``""``); models load once per process, lazily. Columns and limits: docs/listeners.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .registry import SCORERS, Scorer, Scores, columns_for, get_scorer

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


def score(texts: Sequence[Any], scorer: str = "combined") -> Scores:
    return get_scorer(scorer)(texts)


def score_toxicity(texts: Sequence[Any]) -> Scores:
    return score(texts, "toxicity")


def score_profanity(texts: Sequence[Any]) -> Scores:
    return score(texts, "profanity")


def score_hate(texts: Sequence[Any]) -> Scores:
    return score(texts, "hate")


def score_sentiment(texts: Sequence[Any]) -> Scores:
    return score(texts, "sentiment")


def score_all(texts: Sequence[Any]) -> Scores:
    return score(texts, "combined")


def warm_up(scorer: str = "combined") -> None:
    """Load the scorer's models now (a sidekick calls this at load time, not on first request)."""
    get_scorer(scorer)(["warm up"])
