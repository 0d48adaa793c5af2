"""Images for the real node's containerd, made and imported on this machine (no registry here):
the pod sandbox's pause image, packed from the `pause` binary scripts/k8s-tools builds, and
images podman holds (the runtime image scripts/runtime-image builds), exported with `podman save`."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

PAUSE_IMAGE = "localhost/wallaroo-pause:1"
# runc, not podman's default crun (which cannot use hybrid cgroups on these machines)
PODMAN = ["podman", "--runtime", "/usr/sbin/runc"]


class ImageError(RuntimeError):
    """An image could not be made, exported or imported."""


def _member(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def pause_archive(pause_binary: Path, out: Path, name: str = PAUSE_IMAGE) -> Path:
    """A docker-archive (what `ctr image import` takes) of one layer: `/pause` as the entrypoint."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        _member(layer, "pause", pause_binary.read_bytes(), 0o755)
    layer_bytes = layer_buf.getvalue()
    layer_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
    }).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": [f"{layer_id}/layer.tar"]}]).encode()
    with tarfile.open(out, "w") as tar:
        _member(tar, f"{layer_id}/layer.tar", layer_bytes)
        _member(tar, config_name, config)
        _member(tar, "manifest.json", manifest)
    return out


def podman_image_id(image: str) -> str:
    """The id of a podman image; fails naming what builds it when it is missing."""
    done = subprocess.run([*PODMAN, "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError(f"podman has no image {image} ({done.stderr.strip()}): scripts/test-setup builds the "
                         "runtime image (make test runs it first)")
    return done.stdout.strip()


def export_podman_image(image: str, out: Path) -> Path:
    """`podman save` an image as a docker-archive that keeps its name."""
    podman_image_id(image)
    done = subprocess.run([*PODMAN, "save", "--format", "docker-archive", "-o", str(out), image],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError(f"podman save {image}: {done.stderr.strip()}")
    return out


def ctr_import(socket: Path, archive: Path) -> None:
    """Import an archive into containerd's `k8s.io` namespace (the one the CRI plugin serves) and
    unpack it for its default snapshotter."""
    done = subprocess.run(["ctr", "--address", str(socket), "--namespace", "k8s.io", "images", "import",
                           str(archive)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError(f"ctr images import {archive.name}: {done.stderr.strip() or done.stdout.strip()}")
