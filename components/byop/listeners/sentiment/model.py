"""Sentiment listener (Wallaroo BYOP, framework ``custom``).

Scores a text column with ``wallaroo_pulumi.scorers.score_sentiment`` (model: VADER) and returns
``sentiment_compound``, ``sentiment_negative`` as float64. The scorer package is installed in the runtime (shared code:
``wallaroo_pulumi.scorers.byop``); its models ship inside their PyPI packages, so nothing
is downloaded.

Input:  ``text`` (string), or the column named by the env var ``LISTENER_TEXT_FIELD``.
Output: ``sentiment_compound``, ``sentiment_negative`` (float64), one row per input row.
"""

from __future__ import annotations

from wallaroo_pulumi.scorers import byop  # the module, so the only builder here is ours


class SentimentListener(byop.ScorerInference):
    scorer = "sentiment"


class SentimentListenerBuilder(byop.ScorerInferenceBuilder):
    inference_class = SentimentListener
