"""The scorer registry: every scorer by name with its columns; the listener lists derive from it.

Adding a scorer is a module with ``score(texts: list[str]) -> dict[column, np.ndarray]`` and one
``Scorer(...)`` line in ``SCORERS`` (docs/architecture.md, "Adding a scorer").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _combined, _hate, _profanity, _sentiment

Scores = dict[str, np.ndarray]


def as_texts(texts: Sequence[Any]) -> list[str]:
    """The texts as ``str``: ``None`` is ``""``, any other non-string is ``str(item)``."""
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    return ["" if t is None else (t if isinstance(t, str) else str(t)) for t in texts]


@dataclass(frozen=True)
class Scorer:
    """A named batch scorer: texts in, one float64 array per column out (in ``columns`` order)."""

    name: str
    fn: Callable[[list[str]], Scores] = field(repr=False)
    columns: tuple[str, ...]

    def __call__(self, texts: Sequence[Any]) -> Scores:
        import sklearn

        # Our own vectorizers over our own texts: scikit-learn's per-call checks of them cost more
        # than a one-row score itself (~5 of ~7 ms), so they are skipped.
        with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
            return self.fn(as_texts(texts))


def _registry(*scorers: Scorer) -> dict[str, Scorer]:
    return {s.name: s for s in scorers}


SCORERS: dict[str, Scorer] = _registry(
    Scorer("toxicity", _profanity.score_toxicity, ("toxicity",)),
    Scorer("sentiment", _sentiment.score, ("sentiment_compound", "sentiment_negative")),
    Scorer("profanity", _profanity.score_profanity, ("profanity", "profanity_prob")),
    Scorer("hate", _hate.score, ("hate", "offensive")),
)
SCORERS["combined"] = Scorer("combined", _combined.score, tuple(c for part in _combined.PARTS for c in SCORERS[part].columns))

LISTENERS: tuple[str, ...] = tuple(SCORERS)
"""The offline listeners: one per scorer, each a folder under ``components/byop/listeners/``."""
VALIDATOR = "validator"
"""The in-line listener: passes ``generated_text`` through and adds the ``VALIDATOR_SCORER`` columns."""
VALIDATOR_SCORER = "combined"
BUILTINS: tuple[str, ...] = (*LISTENERS, VALIDATOR)
"""Every built-in listener folder the runtime can run without an upload."""


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}: expected one of {sorted(SCORERS)}") from None


def columns_for(name: str) -> tuple[str, ...]:
    return get_scorer(name).columns


def listener_scorer(listener: str) -> str:
    """The scorer a built-in listener runs."""
    return VALIDATOR_SCORER if listener == VALIDATOR else listener
