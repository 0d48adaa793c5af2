"""A user orchestration's task that is a listener: its json names the `monitored_pipeline` whose
logs it scores (and, optionally, the `output_pipeline` it infers its scores into), so its scores
are read where the built-in llm-listener's are (D53)."""

from __future__ import annotations

from typing import Any

from .errors import BadListenerRequest


def user_listener(json_args: dict[str, Any], orchestration_name: str) -> tuple[str, dict[str, Any]]:
    """(monitored pipeline, listener) to store for a user task: ("", {}) when its json names no
    `monitored_pipeline`; the listener is the orchestration, by name, as a built-in task's is its model."""
    monitored = json_args.get("monitored_pipeline")
    if monitored is None:
        return "", {}
    if not isinstance(monitored, str) or not monitored.strip():
        raise BadListenerRequest("json.monitored_pipeline: expected the name of the pipeline whose logs this task "
                                 f"scores (its scores are then read with that pipeline's), got {monitored!r}")
    output = json_args.get("output_pipeline")
    if output is not None and (not isinstance(output, str) or not output.strip()):
        raise BadListenerRequest("json.output_pipeline: expected the name of the pipeline the task infers its "
                                 f"scores into, or none (then '{monitored}-{orchestration_name}-scores'), got {output!r}")
    return monitored, {"name": orchestration_name}
