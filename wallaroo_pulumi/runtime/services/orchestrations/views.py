"""Wallaroo's `Orchestration` shape (the SDK's generated model and its GraphQL
`orchestration` fields) of an upload, and of the built-in llm-listener listed beside them."""

from __future__ import annotations

from typing import Any

from wallaroo_pulumi.orchestration import ORCHESTRATION, ORCHESTRATION_ID
from wallaroo_pulumi.runtime.wire.answers import OWNER, iso

BUILTIN_CREATED = 1_767_225_600.0  # 2026-01-01: the built-in has no upload time; a fixed one keeps listings stable


def orchestration_view(row: dict[str, Any]) -> dict[str, Any]:
    view = {
        "id": row["id"], "name": row["name"], "file_name": row["file_name"], "sha": row["sha"],
        "status": row["status"], "workspace_id": row["workspace_id"], "owner_id": OWNER, "created_by": OWNER,
        "task_id": None, "image_path": "", "file_size": row["file_size"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }
    if row.get("error"):
        view["error"] = row["error"]
    return view


def builtin_view(workspace_id: int) -> dict[str, Any]:
    """The built-in llm-listener: always ready, no file (its sha is empty), in every workspace."""
    return orchestration_view({
        "id": ORCHESTRATION_ID, "name": ORCHESTRATION, "file_name": "", "sha": "", "status": "ready",
        "workspace_id": workspace_id, "file_size": 0, "created_at": BUILTIN_CREATED, "updated_at": BUILTIN_CREATED,
    })
