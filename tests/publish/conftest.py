"""Fixtures for publishing and edges: a real distribution registry on loopback (htpasswd auth), a
small base image pushed to it over the registry API, and a centre runtime that publishes there."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import Server, server_env
from wallaroo_pulumi.runtime.store.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, OciRegistry
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer

BASE_REPOSITORY = "wallaroo/runtime"


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


@pytest.fixture
def centre(tmp_path: Path, registry: RegistryServer, base_image: str) -> Iterator[Server]:
    srv = Server(tmp_path / "centre", centre_args(registry, base_image), centre_env(registry)).start()
    yield srv
    srv.stop()
