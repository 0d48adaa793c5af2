"""Profanity listener (Wallaroo BYOP, framework ``custom``) on ``wallaroo_pulumi.scorers.byop``.

Input: ``text`` (string), or the column named by ``LISTENER_TEXT_FIELD``.
Output: ``profanity``, ``profanity_prob`` (float64), one row per input row.
"""

from __future__ import annotations

from wallaroo_pulumi.scorers import byop  # the module, so the only builder here is ours


class ProfanityListener(byop.ScorerInference):
    scorer = "profanity"


class ProfanityListenerBuilder(byop.ScorerInferenceBuilder):
    inference_class = ProfanityListener
