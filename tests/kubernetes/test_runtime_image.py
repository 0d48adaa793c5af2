"""The runtime image, built from the Dockerfile by scripts/runtime-image (no Docker daemon, no
registry) and run with podman + runc as the Kubernetes pod runs it: its uid, no capabilities,
no privilege escalation. A BYOP is uploaded, deployed and answers an inference."""

from __future__ import annotations

import secrets
import socket
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from tests.kubernetes.k8s_helpers import wait_for
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.components.kubernetes_runtime import RUNTIME_UID
from wallaroo_pulumi.testing.byop import byop_source

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/wallaroo-pulumi-runtime:test"
# runc, not podman's default crun (which cannot set rlimits nor use hybrid cgroups on these machines)
PODMAN = ["podman", "--runtime", "/usr/sbin/runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
TOKEN = "image-test-admin-token-0123456789"


@pytest.fixture(scope="session")
def runtime_image(pytestconfig: pytest.Config) -> str:
    """Build (first run: base + dependencies, minutes) or refresh (seconds) the image."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        subprocess.run([str(REPO / "scripts" / "runtime-image"), IMAGE], check=True)
    return IMAGE


@dataclass
class Container:
    name: str
    url: str

    def podman(self, *args: str) -> str:
        return subprocess.run([*PODMAN, *args], check=True, capture_output=True, text=True).stdout

    def logs(self) -> str:
        return subprocess.run([*PODMAN, "logs", self.name], capture_output=True, text=True).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def container(runtime_image: str) -> Iterator[Container]:
    port = _free_port()
    name = f"wallaroo-image-test-{secrets.token_hex(3)}"
    subprocess.run([
        *PODMAN, "run", "--detach", "--rm", "--name", name, *LIMITS, "--network", "host",
        # as components/kubernetes_runtime.py runs the pod: the image's user, no capabilities
        "--user", f"{RUNTIME_UID}:{RUNTIME_UID}", "--cap-drop", "all", "--security-opt", "no-new-privileges",
        "--env", f"WALLAROO_ADMIN_TOKEN={TOKEN}",
        runtime_image, "runtime", "serve", "--data-dir", "/data", "--host", "127.0.0.1", "--port", str(port),
        "--role", "all"], check=True, capture_output=True)
    box = Container(name, f"http://127.0.0.1:{port}")
    try:
        yield box
    finally:
        subprocess.run([*PODMAN, "rm", "--force", "--time", "5", name], capture_output=True)


def test_the_image_serves_a_byop_as_a_non_root_user(container: Container, tmp_path: Path) -> None:
    def healthy() -> bool:
        try:
            return httpx.get(f"{container.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(f"the runtime's /health (logs: {container.logs()[-2000:]})", healthy, timeout_s=90)

    model = tmp_path / "double.zip"
    with zipfile.ZipFile(model, "w") as zf:
        zf.writestr("model.py", byop_source('return {"y": input_data["x"] * 2.0}'))
    with WallarooClient(container.url, TOKEN) as client:
        version = client.upload_model("double", model, pa.schema([("x", pa.float64())]),
                                      pa.schema([("y", pa.float64())]))
        pipeline = client.create_pipeline("double-pipe", steps=[version])
        deployment = client.deploy("double-pipe", pipeline_id=pipeline.pipeline_id, engine_config={"replica_count": 1})
        assert client.wait_for_deployment(f"double-pipe-{deployment}", timeout_s=180) == "Running", container.logs()
        out = client.infer("double-pipe", pd.DataFrame({"x": [1.0, 2.5]}))
    assert out["out.y"].tolist() == [2.0, 5.0]

    # the server and the model's sidekick: every process of the container under the image's uid
    processes = [line.split(None, 1) for line in container.podman("top", container.name, "huser", "args")
                 .strip().splitlines()[1:]]
    assert any("sidekick" in args for _, args in processes), processes
    assert {uid for uid, _ in processes} == {str(RUNTIME_UID)}, processes
    assert container.podman("exec", container.name, "id", "-u").strip() == str(RUNTIME_UID)
    status = container.podman("exec", container.name, "grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/1/status")
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
