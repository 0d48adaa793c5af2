"""Toxicity listener (Wallaroo BYOP, framework ``custom``) on ``wallaroo_pulumi.scorers.byop``.

Input: ``text`` (string), or the column named by ``LISTENER_TEXT_FIELD``.
Output: ``toxicity`` (float64), one row per input row.
"""

from __future__ import annotations

from wallaroo_pulumi.scorers import byop  # the module, so the only builder here is ours


class ToxicityListener(byop.ScorerInference):
    scorer = "toxicity"


class ToxicityListenerBuilder(byop.ScorerInferenceBuilder):
    inference_class = ToxicityListener
