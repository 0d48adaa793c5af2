"""Fixtures for publishing and edges: a real distribution registry on loopback (htpasswd auth), a
small base image pushed to it over the registry API, and a centre runtime that publishes there."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.runtime.conftest import REPO, Server, make_server, server_env  # noqa: F401 - make_server: a fixture
from wallaroo_pulumi.runtime.store.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, ImageRef, OciRegistry
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer
from wallaroo_pulumi.testing.processes import launch, log_tail, stop_process, wait_ready

BASE_REPOSITORY = "wallaroo/runtime"


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm scripts/test-setup built (or one of the pinned version on PATH), checked: never a build here."""
    done = subprocess.run([str(REPO / "scripts" / "k8s-tools"), "--check", "--helm-only"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"helm is not built ({done.stderr.strip()}): run scripts/test-setup (make test runs it first) or "
                    "scripts/k8s-tools --helm-only", pytrace=False)
    found = shutil.which("helm", path=f"{REPO / '.tools' / 'bin'}:{os.environ.get('PATH', '')}")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as reg:
        yield reg


def tiny_layer() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"the base image\n"
        info = tarfile.TarInfo("etc/base-release")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.fixture(scope="session")
def base_image(registry: RegistryServer) -> str:
    """A one-layer base image pushed with our registry client (the real runtime image is the podman test's)."""
    import hashlib

    tar = tiny_layer()
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": ["wallaroo-pulumi"], "Env": ["PATH=/usr/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
                         "history": [{"created_by": "test base"}]}).encode()
    with OciRegistry(registry.host, *registry.auth, insecure=True) as client:
        layer_digest = client.push_bytes(BASE_REPOSITORY, layer)
        config_digest = client.push_bytes(BASE_REPOSITORY, config)
        client.put_manifest(BASE_REPOSITORY, "base", {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": len(layer)}]})
    return f"{registry.host}/{BASE_REPOSITORY}:base"


def centre_env(registry: RegistryServer) -> dict[str, str]:
    return {**server_env(), "WALLAROO_OCI_USERNAME": registry.username, "WALLAROO_OCI_PASSWORD": registry.password}


def centre_args(registry: RegistryServer, base: str) -> list[str]:
    return ["--publish-registry", f"{registry.host}/team", "--publish-base-image", base, "--publish-insecure"]


@pytest.fixture(scope="module")
def publishing_centre(tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer,
                      base_image: str) -> Iterator[Server]:
    """A centre for a whole module (the resource tests' runtime)."""
    srv = Server(tmp_path_factory.mktemp("publishing") / "data", centre_args(registry, base_image), centre_env(registry))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def centre(tmp_path: Path, registry: RegistryServer, base_image: str) -> Iterator[Server]:
    srv = Server(tmp_path / "centre", centre_args(registry, base_image), centre_env(registry)).start()
    yield srv
    srv.stop()


@dataclass
class EdgeBox:
    """`wallaroo-pulumi runtime edge` as a process, on the published layer's files (the podman test
    runs the image itself): its own data dir, the bundle and credentials in its environment."""

    data_dir: Path
    publish_dir: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    token: str = "edge-box-admin-token-0123456789abcdef"
    proc: subprocess.Popen | None = None
    url: str = ""

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-edge.log"

    def launch(self) -> subprocess.Popen:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return launch([sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "edge", "--data-dir", str(self.data_dir),
                       "--host", "127.0.0.1", "--port", "0", "--publish-dir", str(self.publish_dir), *self.args],
                      log_path=self.log_path, env={**self.env, "WALLAROO_ADMIN_TOKEN": self.token}, cwd=str(REPO),
                      info=self.data_dir / "runtime.json")

    def start(self, timeout: float = 120) -> EdgeBox:
        self.proc = self.launch()
        self.url = wait_ready(self.proc, self.data_dir / "runtime.json", self._deployed, timeout=timeout,
                              what="edge", log_path=self.log_path)
        return self

    def _deployed(self, url: str) -> bool:
        health = httpx.get(url + "/health", timeout=2).json()
        return any(state == "running" for state in health["deployments"].values())

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def infer(self, pipeline: str, xs: list[float]) -> list[dict]:
        answer = httpx.post(f"{self.url}/infer/{pipeline}", content=json.dumps([{"x": x} for x in xs]),
                            headers={"Authorization": f"Bearer {self.token}",
                                     "Content-Type": "application/json; format=pandas-records"}, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def log_tail(self, n: int = 6000) -> str:
        return log_tail(self.log_path, n)

    def stop(self) -> None:
        stop_process(self.proc)


def extract_publish_dir(registry: RegistryServer, image: str, into: Path) -> Path:
    """The published layer's files, read from the registry, as they lie in the image."""
    ref = ImageRef.parse(image)
    with OciRegistry(ref.registry, *registry.auth, insecure=True) as client:
        manifest, _ = client.manifest(ref)
        blob = client.blob(ref.repository, manifest["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        tar.extractall(into, filter="data")
    return into / "opt" / "wallaroo" / "publish"
