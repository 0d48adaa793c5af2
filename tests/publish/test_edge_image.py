"""The whole path with real images: the runtime image (scripts/test-setup builds it) pushed once to a
registry on loopback, a pipeline published on it, the published image pulled and run as an edge with
podman (its own user, no capabilities, its /persist a volume); it infers while the centre is stopped,
and once the centre is back its rows are there exactly once with the edge's name and timestamps."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.publish.conftest import centre_args, centre_env
from tests.publish.publish_helpers import FACTOR, PIPELINE, centre_rows, make_pipeline, post, publish, wait
from tests.runtime.conftest import REPO, Server
from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer

IMAGE = os.environ.get("WALLAROO_RUNTIME_TEST_IMAGE", "localhost/wallaroo-pulumi-runtime:test")
PODMAN = ["podman", "--runtime", "/usr/sbin/runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
TOKEN = "edge-image-admin-token-0123456789"


def podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def pushed_runtime(registry: RegistryServer) -> Iterator[str]:
    """The runtime image in the loopback registry, pushed once per module (zstd: several times
    cheaper than gzip on a busy machine; podman 4.3 cannot push uncompressed)."""
    check = subprocess.run([str(REPO / "scripts" / "runtime-image"), "--check", IMAGE], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.fail(f"{check.stderr.strip()}: run scripts/test-setup (make test runs it first)", pytrace=False)
    target = f"{registry.host}/team/wallaroo-pulumi-runtime:test"
    started = time.monotonic()
    podman("push", "--tls-verify=false", "--creds", f"{registry.username}:{registry.password}",
           "--format", "oci", "--compression-format", "zstd", IMAGE, f"docker://{target}")
    print(f"pushed the runtime image in {time.monotonic() - started:.1f} s")
    yield target


@pytest.fixture
def image_centre(tmp_path: Path, registry: RegistryServer, pushed_runtime: str) -> Iterator[Server]:
    srv = Server(tmp_path / "centre", [*centre_args(registry, pushed_runtime), "--port", str(free_port())],
                 centre_env(registry)).start()
    yield srv
    srv.stop()


@pytest.mark.timeout(1200)
def test_the_published_image_runs_as_an_edge_with_podman(image_centre: Server, registry: RegistryServer,
                                                         tmp_path: Path) -> None:
    centre = image_centre
    version_id, model_id = make_pipeline(centre, tmp_path, PIPELINE, FACTOR)
    done = publish(centre, version_id, model_id)
    measured = post(centre, "/pipelines/get_publish_image", {"id": done["id"]})
    print(f"published {done['pipeline_url']}: {measured['bytes'] / 2**20:.0f} MiB in the registry, "
          f"{measured['publish_seconds']:.1f} s")
    added = post(centre, "/pipelines/add_edge_to_publish", {"name": "podman-box", "pipeline_publish_id": done["id"]},
                 status=201)

    started = time.monotonic()
    podman("pull", "--tls-verify=false", "--creds", f"{registry.username}:{registry.password}", done["pipeline_url"])
    print(f"pulled in {time.monotonic() - started:.1f} s")
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", done["pipeline_url"]).stdout)
    assert config["Cmd"] == ["runtime", "edge", "--data-dir", "/persist", "--host", "0.0.0.0", "--port", "8080"]
    assert config["User"] == "10001:10001" and config["Entrypoint"] == ["wallaroo-pulumi"]

    persist = tmp_path / "persist"
    persist.mkdir()
    os.chown(persist, 10001, 10001)  # the image's user writes its volume
    port = free_port()
    name = f"wallaroo-edge-test-{secrets.token_hex(3)}"
    podman("run", "--detach", "--name", name, *LIMITS, "--network", "host", "--cap-drop", "all",
           "--security-opt", "no-new-privileges", "-v", f"{persist}:/persist",
           "-e", f"EDGE_BUNDLE={added['edge_bundles']['podman-box']}", "-e", "EDGE_TEST_CREDENTIAL=3",
           "-e", f"WALLAROO_ADMIN_TOKEN={TOKEN}", done["pipeline_url"],
           "runtime", "edge", "--data-dir", "/persist", "--host", "127.0.0.1", "--port", str(port),
           "--ship-interval", "1s")
    url = f"http://127.0.0.1:{port}"

    def logs() -> str:
        return subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True).stdout[-4000:] + \
            subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True).stderr[-4000:]

    def serving() -> bool:
        try:
            health = httpx.get(f"{url}/health", timeout=2).json()
        except (httpx.TransportError, ValueError):
            return False
        return any(s == "running" for s in health["deployments"].values())

    try:
        started = time.monotonic()
        wait("the edge container to serve", serving, timeout_s=240, on_fail=logs)
        print(f"the edge served {time.monotonic() - started:.1f} s after podman run")
        assert httpx.get(f"{url}/health", timeout=5).json()["edge"]["joined"] is True
        centre.stop()
        answer = httpx.post(f"{url}/infer/{PIPELINE}", content='[{"x": 2.0}, {"x": 4.0}]', timeout=60,
                            headers={"Authorization": f"Bearer {TOKEN}",
                                     "Content-Type": "application/json; format=pandas-records"})
        assert answer.status_code == 200, answer.text
        assert [r["out"]["y"] for r in answer.json()] == [6.0, 12.0]

        centre.start()
        wait("the container's rows at the centre", lambda: len(centre_rows(centre)) == 2 or None, on_fail=logs)
        time.sleep(3)
        rows = centre_rows(centre)
        assert sorted(rows["out.y"].tolist()) == [6.0, 12.0] and set(rows["metadata.partition"]) == {"podman-box"}
        times = {pd.to_datetime(r["time"], unit="ms", utc=True) for r in answer.json()}
        assert set(pd.to_datetime(rows["time"], utc=True)) == times
    finally:
        subprocess.run([*PODMAN, "rm", "--force", "--time", "5", name], capture_output=True)
        subprocess.run([*PODMAN, "rmi", "--force", done["pipeline_url"]], capture_output=True)
