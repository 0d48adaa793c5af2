"""A model version's `openai_config` through the MLOps API (`models/insert_model_config`, the call
behind the Wallaroo SDK's `model_version.configure(openai_config=...)`); mixed into `WallarooClient`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class ModelConfigAPI:
    """Mixed into `WallarooClient`; `_post` is its JSON POST."""

    _post: Callable[..., Any]

    def set_openai_config(self, model_version_id: int, openai_config: Mapping[str, Any]) -> dict[str, Any]:
        """Store a version's OpenAI config (Wallaroo's OpenaiConfig: enabled, completion_config,
        chat_completion_config); its config as stored."""
        data = self._post("/v1/api/models/insert_model_config",
                          {"model_version_id": model_version_id, "openai_config": dict(openai_config)},
                          f"openai_config of model version {model_version_id}")
        return data["model_config"].get("openai") or {}

    def openai_config(self, model_version_id: int) -> dict[str, Any] | None:
        """A version's OpenAI config, None when never set."""
        data = self._post("/v1/api/models/get_model_version_by_id", {"model_version_id": model_version_id},
                          f"model version {model_version_id}")
        return (data["model_version"].get("config") or {}).get("openai")
