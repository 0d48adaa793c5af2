"""Profanity and toxicity: better-profanity's word list (same decision, ~50x faster) and
alt-profanity-check's calibrated linear SVM (``predict_proba`` called directly).

How and why: docs/listeners.md; a test checks :class:`WordList` against ``contains_profanity``.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

_lock = threading.Lock()
_wordlist: WordList | None = None
_svm: tuple | None = None


class WordList:
    """better-profanity's decision (``Profanity().contains_profanity``) without its slowness."""

    def __init__(self, words: list[str], char_map: dict[str, tuple[str, ...]], allowed: set[str]):
        self.entries: set[str] = set()
        self.prefixes: set[str] = set()
        self.max_combos = 1
        for w in words:
            w = w.lower()
            self.entries.add(w)
            for i in range(1, len(w) + 1):
                self.prefixes.add(w[:i])
            non_allowed = sum(1 for c in w if c not in allowed)
            self.max_combos = max(self.max_combos, non_allowed)
        # text char -> the list chars it may stand for (always itself)
        rev: dict[str, set[str]] = {}
        for list_char, variants in char_map.items():
            for v in variants:
                rev.setdefault(v, {v}).add(list_char)
        self.rev = {k: tuple(sorted(v)) for k, v in rev.items()}
        allowed_class = "".join(re.escape(c) for c in sorted(allowed))
        self._word_re = re.compile(f"[{allowed_class}]+")
        ascii_allowed = "".join(re.escape(c) for c in sorted(c for c in allowed if c.isascii()))
        self._ascii_word_re = re.compile(f"[{ascii_allowed}]+")  # same matches on ASCII text, much faster
        # word -> states after matching it from the start of an entry (natural text repeats its
        # words, so most lookups hit this cache)
        self._first: dict[str, frozenset[str]] = {}

    def _first_states(self, word: str) -> frozenset[str]:
        st = self._first.get(word)
        if st is None:
            if len(self._first) > 200_000:
                self._first.clear()
            st = self._first[word] = frozenset(self._step({""}, word))
        return st

    def _step(self, states: set[str], chunk: str) -> set[str]:
        rev, prefixes = self.rev, self.prefixes
        for ch in chunk:
            subs = rev.get(ch)
            if subs is None:
                states = {s + ch for s in states if s + ch in prefixes}
            else:
                states = {s + c for s in states for c in subs if s + c in prefixes}
            if not states:
                return states
        return states

    def contains(self, text: str) -> bool:
        text = str(text)
        word_re = self._ascii_word_re if text.isascii() else self._word_re
        words = [m.span() for m in word_re.finditer(text)]
        if not words:
            return False
        n = len(text)
        # better-profanity leaves a text alone when its first word starts at its last character,
        # and never joins a following word that starts at the text's last character.
        if words[0][0] >= n - 1:
            return False
        low = text.lower()
        entries, k = self.entries, self.max_combos
        for i, (s, e) in enumerate(words):
            start = self._first_states(low[s:e])
            if not start:
                continue
            if start & entries:
                return True
            if e >= n:  # last word without a trailing separator: single-word check only
                continue
            plain, seps = set(start), set(start)
            prev_end = e
            for j in range(i + 1, min(i + 1 + k, len(words))):
                ns, ne = words[j]
                if ns >= n - 1:
                    break
                if plain:
                    plain = self._step(plain, low[ns:ne])
                if seps:
                    seps = self._step(seps, low[prev_end:ne])
                if (plain & entries) or (seps & entries):
                    return True
                if not plain and not seps:
                    break
                prev_end = ne
        return False


def wordlist() -> WordList:
    global _wordlist
    if _wordlist is None:
        with _lock:
            if _wordlist is None:
                from better_profanity import Profanity
                from better_profanity.constants import ALLOWED_CHARACTERS
                from better_profanity.utils import read_wordlist

                p = Profanity.__new__(Profanity)  # only for its defaults; don't build 900 VaryingStrings
                Profanity.__init__(p, words=[])
                words = list(read_wordlist(p._default_wordlist_filename))
                _wordlist = WordList(words, p.CHARS_MAPPING, set(ALLOWED_CHARACTERS))
    return _wordlist


def wordlist_file() -> Path:
    import better_profanity

    return Path(better_profanity.__file__).parent / "profanity_wordlist.txt"


def contains(texts: list[str]) -> np.ndarray:
    wl = wordlist()
    return np.fromiter((1.0 if wl.contains(t) else 0.0 for t in texts), dtype=np.float64, count=len(texts))


class CalibratedLinear:
    """alt-profanity-check's ``CalibratedClassifierCV(LinearSVC, method="sigmoid")`` as one sparse
    product: the mean over its folds of ``expit(-(a * (x @ w + c) + b))``, which is what its
    ``predict_proba`` computes for the positive class, without scikit-learn's ~40 ms per call."""

    def __init__(self, model) -> None:
        folds = model.calibrated_classifiers_
        if getattr(model, "method", None) != "sigmoid" or any(len(f.calibrators) != 1 for f in folds):
            raise ValueError(f"alt-profanity-check's model is not the binary sigmoid-calibrated "
                             f"LinearSVC this scorer evaluates (method={getattr(model, 'method', None)!r}); "
                             "pin alt-profanity-check 1.x")
        self.weights = np.vstack([f.estimator.coef_.ravel() for f in folds]).T  # (features, folds)
        self.intercepts = np.array([f.estimator.intercept_[0] for f in folds])
        self.a = np.array([f.calibrators[0].a_ for f in folds])
        self.b = np.array([f.calibrators[0].b_ for f in folds])

    def proba(self, x) -> np.ndarray:
        from scipy.special import expit

        decision = np.asarray(x @ self.weights) + self.intercepts
        return expit(-(self.a * decision + self.b)).mean(axis=1)


def _load_svm():
    """(vectorizer, model) as alt-profanity-check ships them."""
    import warnings
    from importlib import resources

    import joblib

    data = resources.files("profanity_check") / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn minor-version pickle warnings
        return joblib.load(data / "vectorizer.joblib"), joblib.load(data / "model.joblib")


def svm() -> tuple:
    """(vectorizer, CalibratedLinear) from alt-profanity-check's package data, loaded once."""
    global _svm
    if _svm is None:
        with _lock:
            if _svm is None:
                vec, model = _load_svm()
                _svm = (vec, CalibratedLinear(model))
    return _svm


def svm_proba(texts: list[str]) -> np.ndarray:
    if len(texts) == 0:
        return np.zeros(0)
    vec, linear = svm()
    return np.asarray(linear.proba(vec.transform(texts)), dtype=np.float64)


def svm_reference_proba(texts: list[str]) -> np.ndarray:
    """The package's own ``predict_proba`` (slow), for the test that holds ``svm_proba`` to it."""
    vec, model = _load_svm()
    return model.predict_proba(vec.transform(texts))[:, 1]


def score_toxicity(texts: list[str]) -> dict[str, np.ndarray]:
    return {"toxicity": svm_proba(texts)}


def score_profanity(texts: list[str]) -> dict[str, np.ndarray]:
    return {"profanity": contains(texts), "profanity_prob": svm_proba(texts)}
