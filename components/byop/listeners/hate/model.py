"""Hate speech listener (Wallaroo BYOP, framework ``custom``) on ``wallaroo_pulumi.scorers.byop``.

Input: ``text`` (string), or the column named by ``LISTENER_TEXT_FIELD``.
Output: ``hate``, ``offensive`` (float64), one row per input row.
"""

from __future__ import annotations

from wallaroo_pulumi.scorers import byop  # the module, so the only builder here is ours


class HateListener(byop.ScorerInference):
    scorer = "hate"


class HateListenerBuilder(byop.ScorerInferenceBuilder):
    inference_class = HateListener
