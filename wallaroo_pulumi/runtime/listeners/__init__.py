"""Offline LLM listeners: tasks that score a pipeline's logged inferences with a listener model
(once or on a cron schedule), store the scores as inference logs, and track their drift.

``ListenerService(db, logstore).router`` is the whole HTTP surface; see ``docs/listeners.md``.
"""

from .drift import assay, summarize
from .engine import ListenerArgs, score_pipeline_name
from .executor import BUILTINS, ListenerModelRef, builtin_resolver

__all__ = [
    "BUILTINS",
    "ListenerArgs",
    "ListenerModelRef",
    "ListenerService",
    "assay",
    "builtin_resolver",
    "score_pipeline_name",
    "summarize",
]


def __getattr__(name: str):  # FastAPI only when the service is asked for
    if name == "ListenerService":
        from .service import ListenerService

        return ListenerService
    raise AttributeError(name)
