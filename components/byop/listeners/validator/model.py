"""In-line validation listener (Wallaroo BYOP, framework ``custom``).

Put it after the LLM step (``[llm, validator]``): it passes ``generated_text`` through and adds
every score column of ``wallaroo_pulumi.scorers.score_all`` (toxicity, profanity,
profanity_prob, hate, offensive, sentiment_compound, sentiment_negative; float64), so the
pipeline answers with the text and its scores in one call.

Input:  ``generated_text`` (string), plus any columns to carry through (declare them with
        ``listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)``: the LLM's error and usage).
Output: the input columns + the score columns (float64).
"""

from __future__ import annotations

from wallaroo_pulumi.scorers import byop  # the module, so the only builder here is ours


class ValidatorListener(byop.ScorerInference):
    scorer = "combined"
    text_field = "generated_text"
    text_field_env = None  # always the LLM step's output column
    pass_through = True


class ValidatorListenerBuilder(byop.ScorerInferenceBuilder):
    inference_class = ValidatorListener
