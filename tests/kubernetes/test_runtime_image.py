"""The runtime image, built from the Dockerfile by scripts/runtime-image (no Docker daemon, no
registry) and run with podman + runc as the Kubernetes pod runs it: its uid, no capabilities,
no privilege escalation. A BYOP is uploaded, deployed and answers an inference."""

from __future__ import annotations

import secrets
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
from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.testing.byop import byop_source
from wallaroo_pulumi.testing.processes import process_tree

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/wallaroo-pulumi-runtime:test"
# runc, not podman's default crun (which cannot set rlimits nor use hybrid cgroups on these machines)
PODMAN = ["podman", "--runtime", "/usr/sbin/runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
TOKEN = "image-test-admin-token-0123456789"


@pytest.fixture(scope="session")
def runtime_image() -> str:
    """The image scripts/test-setup built, checked to be built from these sources (never built here)."""
    done = subprocess.run([str(REPO / "scripts" / "runtime-image"), "--check", IMAGE], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{done.stderr.strip()}: run scripts/test-setup (make test runs it first)", pytrace=False)
    return IMAGE


@dataclass
class Container:
    name: str
    url: str

    def podman(self, *args: str) -> str:
        return subprocess.run([*PODMAN, *args], check=True, capture_output=True, text=True).stdout

    def logs(self) -> str:
        return subprocess.run([*PODMAN, "logs", self.name], capture_output=True, text=True).stdout


def dockerfile_user() -> tuple[int, int]:
    """The uid and gid of the Dockerfile's last USER line, read from the Dockerfile itself."""
    lines = [line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    assert lines, "the Dockerfile names no USER: the image would run as root"
    uid, _, gid = lines[-1].partition(":")
    return int(uid), int(gid or uid)


def host_view(pid: int) -> dict[int, dict[str, str]]:
    """Every process of the tree under ``pid`` as the host's /proc shows it (not as the container
    reports itself): real, effective, saved and fs uid and gid, CapEff, NoNewPrivs, command line."""
    seen: dict[int, dict[str, str]] = {}
    for p in process_tree(pid):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines() if ":" in line)
            fields["args"] = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        seen[p] = {k: v.strip() for k, v in fields.items()}
    return seen


@pytest.fixture
def container(runtime_image: str) -> Iterator[Container]:
    port = free_port()
    name = f"wallaroo-image-test-{secrets.token_hex(3)}"
    subprocess.run([
        *PODMAN, "run", "--detach", "--rm", "--name", name, *LIMITS, "--network", "host",
        # as the Dockerfile says (its USER: no --user here) with what the pod adds: no capabilities
        "--cap-drop", "all", "--security-opt", "no-new-privileges",
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

    # run without --user: the image's own USER, which the pod's runAsUser (RUNTIME_UID) must match
    uid, gid = dockerfile_user()
    assert (uid, gid) == (RUNTIME_UID, RUNTIME_UID), "the Dockerfile's USER and the pod's runAsUser differ"
    # the server and the model's sidekick, seen from the host: every process of the container under that
    # uid and gid (real, effective, saved, fs), without capabilities or a way to gain privileges
    pid = int(container.podman("inspect", "--format", "{{.State.Pid}}", container.name).strip())
    processes = host_view(pid)
    assert any("sidekick" in p["args"] for p in processes.values()), processes
    for p in processes.values():
        assert p["Uid"].split() == [str(uid)] * 4 and p["Gid"].split() == [str(gid)] * 4, p
        assert (p["CapEff"], p["CapPrm"], p["NoNewPrivs"]) == ("0000000000000000", "0000000000000000", "1"), p


def test_the_image_runs_a_sidekick_pod_as_its_manifest_says(runtime_image: str, tmp_path: Path) -> None:
    """The container of a step's pod (D35), from the manifest the runtime applies: the link
    server as the image's user, no capabilities, a read-only root and a /tmp of its own; the
    runtime's client sends it the model and gets answers computed with the step's env."""
    import asyncio
    import hashlib
    import re

    from wallaroo_pulumi.runtime.kube.objects import StepObjects
    from wallaroo_pulumi.runtime.sidekick.remote import ModelBundle, RemoteSidekick
    from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec
    from wallaroo_pulumi.runtime.sidekick.steps import StepTarget

    model = tmp_path / "env.zip"
    with zipfile.ZipFile(model, "w") as zf:
        zf.writestr("model.py", byop_source(
            'n = len(input_data["x"])\n'
            'return {"y": input_data["x"] * 2.0, "key": np.array([os.environ.get("SECRET_A", "-")] * n),'
            ' "uid": np.array([os.getuid()] * n)}'))
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    spec = SidekickSpec(step_name="env", model_version="1", model_dir=tmp_path, env={"SECRET_A": "alpha"})
    target = StepTarget(deployment_id=1, pipeline_name="p", pipeline_version="v", pipeline_version_id=1,
                        model_name="env", model_version="1", sha=sha)
    pod = StepObjects(target, spec, "ns", "rt", runtime_image).deployment(1, [])["spec"]["template"]["spec"]
    [container] = pod["containers"]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"  # as the manifest says
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    port = free_port()
    env = {"WALLAROO_SIDEKICK_TOKEN": TOKEN, "SECRET_A": "alpha", "POD_IP": "127.0.0.1",
           **{e["name"]: e["value"] for e in container["env"] if "value" in e}}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    args[args.index("--port") + 1] = str(port)  # the pod's port, on the host's network here
    name = f"wallaroo-sidekick-test-{secrets.token_hex(3)}"
    subprocess.run([
        *PODMAN, "run", "--detach", "--rm", "--name", name, *LIMITS, "--network", "host",
        "--user", user, "--cap-drop", "all", "--security-opt", "no-new-privileges",
        "--read-only", "--tmpfs", "/tmp", *[a for k, v in env.items() for a in ("--env", f"{k}={v}")],
        "--entrypoint", container["command"][0], runtime_image, *container["command"][1:], *args],
        check=True, capture_output=True)
    box = Container(name, f"127.0.0.1:{port}")
    try:
        async def link() -> pa.Table:
            remote = RemoteSidekick("pod", "env", "127.0.0.1", port, TOKEN, ModelBundle(sha, model), load_timeout_s=90)
            await remote.start()
            try:
                return await remote.predict(pa.table({"x": [1.0, 2.5]}))
            finally:
                await remote.stop()

        try:
            out = asyncio.run(link())
        except Exception as exc:
            raise AssertionError(f"{exc}\n{box.logs()[-3000:]}") from None
        assert out.column("y").to_pylist() == [2.0, 5.0]
        assert set(out.column("key").to_pylist()) == {"alpha"} and set(out.column("uid").to_pylist()) == {RUNTIME_UID}
    finally:
        subprocess.run([*PODMAN, "rm", "--force", "--time", "5", name], capture_output=True)
