"""In-line validation listener (Wallaroo BYOP, framework ``custom``): put it after the LLM step.

Input: ``generated_text`` (string), plus any columns to carry (``listener_schemas("validator", carry=...)``).
Output: the input columns, then every ``combined`` score column (float64).
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
