"""Fixtures for the wire conformance tests: the pinned Wallaroo SDK in its own venv
(scripts/wallaroo-sdk, cached under .tools/) and a REAL runtime on loopback; the SDK's side runs
as scripts in that venv (tests/wire/sdk/), which print JSON for the tests to check."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import REPO, Server, server_env

SDK_DIR = Path(__file__).with_name("sdk")


@pytest.fixture(scope="session")
def sdk_python() -> str:
    """The python of the pinned SDK's venv, which scripts/test-setup builds (checked here, never built)."""
    done = subprocess.run([str(REPO / "scripts" / "wallaroo-sdk"), "--check"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"{done.stderr.strip()}: run scripts/test-setup (make test runs it first)", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def wire_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("wire") / "data", [], server_env()).start()
    yield srv
    srv.stop()


def run_sdk(python: str, script: str, *args: str, server: Server, timeout: float = 900) -> list[dict]:
    """Run an SDK-side script; its stdout's JSON lines (other lines, the SDK's progress, are skipped)."""
    done = subprocess.run([python, str(SDK_DIR / script), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(REPO))
    if done.returncode != 0:
        pytest.fail(f"{script} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}\n"
                    f"runtime log:\n{server.log_tail()}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
