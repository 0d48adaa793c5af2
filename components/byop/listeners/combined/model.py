"""Combined listener (Wallaroo BYOP, framework ``custom``).

Scores a text column with ``wallaroo_pulumi.scorers.score_all`` (model: all of toxicity,
profanity, hate and sentiment) and returns ``toxicity``, ``profanity``, ``profanity_prob``,
``hate``, ``offensive``, ``sentiment_compound``, ``sentiment_negative`` as float64. The scorer
package is installed in the runtime (shared code: ``wallaroo_pulumi.scorers.byop``); its models
ship inside their PyPI packages, so nothing is downloaded.

Input:  ``text`` (string), or the column named by the env var ``LISTENER_TEXT_FIELD``.
Output: ``toxicity``, ``profanity``, ``profanity_prob``, ``hate``, ``offensive``,
``sentiment_compound``, ``sentiment_negative`` (float64), one row per input row.
"""

from __future__ import annotations

from wallaroo_pulumi.scorers import byop  # the module, so the only builder here is ours


class CombinedListener(byop.ScorerInference):
    scorer = "combined"


class CombinedListenerBuilder(byop.ScorerInferenceBuilder):
    inference_class = CombinedListener
