"""Profanity listener (Wallaroo BYOP, framework ``custom``).

Scores a text column with ``wallaroo_pulumi.scorers.score_profanity`` (model: better-profanity's
word list + alt-profanity-check) and returns ``profanity``, ``profanity_prob`` as float64. The
scorer package is installed in the runtime (shared code: ``wallaroo_pulumi.scorers.byop``); its
models ship inside their PyPI packages, so nothing is downloaded.

Input:  ``text`` (string), or the column named by the env var ``LISTENER_TEXT_FIELD``.
Output: ``profanity``, ``profanity_prob`` (float64), one row per input row.
"""

from __future__ import annotations

from wallaroo_pulumi.scorers import byop  # the module, so the only builder here is ours


class ProfanityListener(byop.ScorerInference):
    scorer = "profanity"


class ProfanityListenerBuilder(byop.ScorerInferenceBuilder):
    inference_class = ProfanityListener
