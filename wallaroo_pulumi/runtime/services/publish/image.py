"""A published pipeline as an OCI image, written without a container engine: the runtime image's
manifest and layers as they are in the registry (mounted, not copied, on the same registry) plus one
layer holding the pipeline version (publish.json and its model artifacts, no credentials), and a
config whose command starts the runtime in edge mode."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wallaroo_pulumi.runtime.store.oci import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    TO_OCI,
    Blob,
    ImageRef,
    OciRegistry,
)

PUBLISH_DIR = "/opt/wallaroo/publish"  # where the layer puts the pipeline version in the image
PERSIST_DIR = "/persist"  # the edge's data dir: Wallaroo's docker run mounts a volume here
EDGE_PORT = 8080
RUNTIME_UID = 10001  # the image's USER (Dockerfile)
EDGE_COMMAND = ["runtime", "edge", "--data-dir", PERSIST_DIR, "--host", "0.0.0.0", "--port", str(EDGE_PORT)]


@dataclass
class Pushed:
    image: str
    digest: str
    size: int  # bytes in the registry: every layer (compressed) and the config


class _Hashing(io.RawIOBase):
    """tar bytes -> sha256 (the layer's diff id) and on into gzip (the blob)."""

    def __init__(self, sink: gzip.GzipFile) -> None:
        self.sink, self.sha = sink, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sha.update(data)
        self.sink.write(data)
        return len(data)


def _root_readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
    return info


def write_layer(out: Path, publish_json: dict[str, Any], artifacts: dict[str, Path],
                deps: dict[str, Path] | None = None) -> Blob:
    """The pipeline layer: PUBLISH_DIR/publish.json, PUBLISH_DIR/models/<sha> (each artifact as
    uploaded), PUBLISH_DIR/deps/<sha>/ (its requirements, installed at publish) and an empty
    PERSIST_DIR owned by the image's user. Files are root's, world-readable."""
    with out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        hashing = _Hashing(gz)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for folder, owner, mode in (("opt", 0, 0o755), ("opt/wallaroo", 0, 0o755), (PUBLISH_DIR[1:], 0, 0o755),
                                        (f"{PUBLISH_DIR[1:]}/models", 0, 0o755), (f"{PUBLISH_DIR[1:]}/deps", 0, 0o755),
                                        (PERSIST_DIR[1:], RUNTIME_UID, 0o700)):
                info = tarfile.TarInfo(folder)
                info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, owner, owner
                tar.addfile(info)
            data = json.dumps(publish_json, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(f"{PUBLISH_DIR[1:]}/publish.json")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
            for sha, path in sorted(artifacts.items()):
                info = tarfile.TarInfo(f"{PUBLISH_DIR[1:]}/models/{sha}")
                info.size, info.mode = path.stat().st_size, 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
            for sha, folder in sorted((deps or {}).items()):
                tar.add(folder, arcname=f"{PUBLISH_DIR[1:]}/deps/{sha}", filter=_root_readable)
        diff_id = "sha256:" + hashing.sha.hexdigest()
    return Blob.of(out, OCI_LAYER_GZIP, diff_id=diff_id)


def push_image(base: ImageRef, base_registry: OciRegistry, target: ImageRef, registry: OciRegistry, layer: Blob,
               labels: dict[str, str], progress: Callable[[str], None]) -> Pushed:
    """The base image's layers (mounted when both are on one registry, else streamed across), the
    pipeline layer, a config that runs the edge, and the manifest under `target`'s tag."""
    manifest, _ = base_registry.manifest(base)
    config = json.loads(base_registry.blob(base.repository, manifest["config"]["digest"]))
    layers = []
    for i, desc in enumerate(manifest["layers"], 1):
        digest = desc["digest"]
        progress(f"base layer {i}/{len(manifest['layers'])} ({desc['size'] // 2**20} MiB)")
        if not registry.has_blob(target.repository, digest):
            same = base.registry == target.registry
            if not (same and registry.mount_blob(target.repository, digest, base.repository)):
                registry.upload(target.repository, digest, base_registry.stream_blob(base.repository, digest),
                                desc["size"])
        layers.append({**desc, "mediaType": TO_OCI.get(desc["mediaType"], desc["mediaType"])})
    progress(f"pipeline layer ({layer.size // 1024} KiB)")
    registry.push_file(target.repository, layer)
    layers.append(layer.descriptor())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    settings = dict(config.get("config") or {})
    settings["Cmd"] = EDGE_COMMAND
    settings["Env"] = [e for e in settings.get("Env") or [] if not e.startswith("WALLAROO_PUBLISH_DIR=")] + [
        f"WALLAROO_PUBLISH_DIR={PUBLISH_DIR}"]
    settings["ExposedPorts"] = {**(settings.get("ExposedPorts") or {}), f"{EDGE_PORT}/tcp": {}}
    settings["Volumes"] = {**(settings.get("Volumes") or {}), PERSIST_DIR: {}}
    settings["Labels"] = {**(settings.get("Labels") or {}), **labels}
    config["config"] = settings
    config["created"] = now
    config["rootfs"] = {"type": "layers", "diff_ids": [*config["rootfs"]["diff_ids"], layer.extra["diff_id"]]}
    config["history"] = [*(config.get("history") or []),
                         {"created": now, "created_by": f"wallaroo publish {labels.get('wallaroo.pipeline', '')}"}]
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = registry.push_bytes(target.repository, config_bytes)
    out = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
           "layers": layers, "annotations": {"org.opencontainers.image.created": now, **labels}}
    assert target.tag is not None
    digest = registry.put_manifest(target.repository, target.tag, out)
    return Pushed(str(target), digest, sum(d["size"] for d in layers) + len(config_bytes))
