"""Offline LLM listeners: tasks that score a pipeline's logged inferences with a listener model
(once or on a cron schedule), store the scores as inference logs, and track their drift.
The HTTP routes are in ``.routes``; see ``docs/listeners.md``."""

from .drift import assay, summarize
from .engine import ListenerArgs, score_pipeline_name
from .executor import ListenerModelRef
from .service import ListenerService

__all__ = [
    "ListenerArgs",
    "ListenerModelRef",
    "ListenerService",
    "assay",
    "score_pipeline_name",
    "summarize",
]
