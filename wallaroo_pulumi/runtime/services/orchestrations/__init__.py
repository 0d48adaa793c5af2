"""User orchestrations: uploaded zips of Python (`main.py`, at most one `requirements.txt`) that
run as tasks, each run sandboxed with a key of its own (README "Your own orchestrations", D50)."""

from .package import OrchestrationRejected
from .python import TaskPython
from .runner import TaskFailed, TaskRunner
from .service import OrchestrationNotReady, OrchestrationService
from .views import builtin_view, orchestration_view

__all__ = ["OrchestrationNotReady", "OrchestrationRejected", "OrchestrationService", "TaskFailed", "TaskPython",
           "builtin_view", "orchestration_view",
           "TaskRunner"]
