"""The stand-ins run out of process too (``python -m wallaroo_pulumi.standins``), controlled over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np

from wallaroo_pulumi.adapters.openai_chat import OpenAIChatAdapter


def test_openai_standin_subprocess_with_http_fault_control() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wallaroo_pulumi.standins", "openai", "--api-key", "sk-cli-test-key-000000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        env = {**info["env"], "RETRY_BACKOFF_S": "0.01"}
        httpx.post(f"{info['control']}/faults", json={"server_error": {"count": 1, "status": 503}}).raise_for_status()
        with OpenAIChatAdapter.from_env(env) as adapter:
            out = adapter.predict({"text": np.array(["out of process"])})
        assert out["generated_text"][0] == "echo: out of process"
        stats = httpx.get(f"{info['control']}/stats").json()
        assert stats["by_status"] == {"503": 1, "200": 1}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
