"""The Wallaroo SDK's OpenAI flow, unchanged, against the runtime: a model version configured with
`OpenaiConfig` (models/insert_model_config, read back through GraphQL), then
`Pipeline.openai_chat_completion` (also streamed) and `openai_completion`, which call
{pipeline url}/openai/v1 with the SDK's own openai client and the caller's token."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.conftest import Server
from tests.wire.conftest import run_sdk
from wallaroo_pulumi import BYOP_DIR
from wallaroo_pulumi.packaging import pack
from wallaroo_pulumi.standins import OpenAIStandin

KEY = "sk-wire-openai"


@pytest.mark.timeout(1800)
def test_the_sdks_openai_calls_run_unchanged(sdk_python: str, wire_server: Server, tmp_path: Path) -> None:
    model = pack(BYOP_DIR / "openai_llm", tmp_path)
    with OpenAIStandin(api_keys=[KEY]) as upstream:
        [out] = run_sdk(sdk_python, "openai_flow.py", wire_server.url, wire_server.token, str(tmp_path), str(model.path),
                        upstream.openai_base_url, KEY, server=wire_server)
        sent = [r.body for r in upstream.stats.recent]
    assert out["config"] == {"enabled": True, "completion_config": {}, "chat_completion_config": {"max_tokens": 32}}
    assert out["chat"] == {"content": "echo: hello from the sdk", "finish_reason": "stop", "completion_tokens": 5}
    assert out["stream"]["text"] == "echo: stream it" and out["stream"]["chunks"] >= 5 and out["stream"]["usage"] == 3
    assert out["completion"] == {"text": "echo: complete this", "object": "text_completion"}
    assert sent[0]["max_tokens"] == 32  # the config's default reached the upstream
