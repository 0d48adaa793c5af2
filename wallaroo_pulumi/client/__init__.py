"""Typed client for the runtime's Wallaroo-compatible MLOps API.

    from wallaroo_pulumi.client import WallarooClient, ModelRef
    client = WallarooClient.from_data_dir("~/.wallaroo-pulumi")
"""

from wallaroo_pulumi.client._client import WallarooClient
from wallaroo_pulumi.client._shared import ARROW_FILE, ARROW_STREAM, JSON_RECORDS, records_to_frame
from wallaroo_pulumi.client.errors import (
    AuthError,
    ConflictError,
    DeploymentError,
    InferenceError,
    NotFoundError,
    RuntimeUnavailableError,
    ValidationError,
    WallarooError,
)
from wallaroo_pulumi.client.keys import ApiKey, CreatedKey
from wallaroo_pulumi.client.models import (
    CreatedPipeline,
    DeploymentStatus,
    Model,
    ModelRef,
    ModelVersion,
    Pipeline,
    SidekickStatus,
    Task,
    TaskRun,
    Workspace,
)
from wallaroo_pulumi.schemas import schema_from_b64, schema_to_b64

__all__ = [
    "ARROW_FILE", "ARROW_STREAM", "JSON_RECORDS",
    "ApiKey", "AuthError", "ConflictError", "CreatedKey", "CreatedPipeline", "DeploymentError", "DeploymentStatus",
    "InferenceError", "Model", "ModelRef", "ModelVersion", "NotFoundError", "Pipeline", "Task", "TaskRun",
    "RuntimeUnavailableError", "SidekickStatus", "ValidationError", "WallarooClient",
    "WallarooError", "Workspace", "records_to_frame", "schema_from_b64", "schema_to_b64",
]
