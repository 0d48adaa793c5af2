"""An OCI registry over the distribution API (what `docker push` speaks): manifests, blobs (mounted
across repositories where the registry allows, else streamed), tags deleted by digest. Auth is the
registry's own challenge: Basic (htpasswd) or a Bearer token from its token service (D-publish)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"  # a Helm chart in a registry: its Chart.yaml as JSON
HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"  # and its packaged .tgz
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
#: Docker's media types and their OCI twins (the same bytes), so one OCI manifest can list any base's layers.
TO_OCI = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.container.image.v1+json": OCI_CONFIG,
}
_REF = re.compile(r"^(?P<registry>[A-Za-z0-9.-]+(?::\d+)?)/(?P<repository>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
                  r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")
_CHUNK = 1 << 20


class RegistryError(Exception):
    """The registry refused or could not be reached; the message says which registry and what to do."""


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, what: str = "image") -> ImageRef:
        match = _REF.match(text.strip())
        if match is None:
            raise ValueError(f"{what}: expected REGISTRY[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST] "
                             f"(e.g. registry.example.com/team/runtime:1.0), got {text!r}")
        return cls(**match.groupdict())

    @property
    def reference(self) -> str:
        """What a manifest request names: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "") + (
            f"@{self.digest}" if self.digest else "")


@dataclass
class Blob:
    """A file to push as one blob: its digest and size, computed once."""

    path: Path
    digest: str
    size: int
    media_type: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, path: Path, media_type: str, **extra: Any) -> Blob:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        return cls(path, f"sha256:{h.hexdigest()}", path.stat().st_size, media_type, extra)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class _ChallengeAuth(httpx.Auth):
    """Answers whichever challenge the registry sends: Basic, or Bearer from its token realm."""

    def __init__(self, username: str | None, password: str | None, client: httpx.Client) -> None:
        self.username, self.password, self.client = username, password, client
        self.header: str | None = None

    def _basic(self) -> str:
        if self.username is None or self.password is None:
            raise RegistryError("the registry asks for credentials and none were given (username and password)")
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.header is not None:
            request.headers["Authorization"] = self.header
        response = yield request
        if response.status_code != 401:
            return
        scheme, _, rest = response.headers.get("www-authenticate", "").partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if scheme.lower() == "basic":
            self.header = self._basic()
        elif scheme.lower() == "bearer" and "realm" in params:
            query = {k: v for k, v in params.items() if k in ("service", "scope")}
            headers = {"Authorization": self._basic()} if self.username is not None else {}
            answer = self.client.get(params["realm"], params=query, headers=headers, timeout=30)
            if answer.status_code != 200:
                raise RegistryError(f"the registry's token service refused the credentials ({answer.status_code}): "
                                    "check the registry username and password")
            body = answer.json()
            self.header = "Bearer " + (body.get("token") or body.get("access_token") or "")
        else:
            return
        request.headers["Authorization"] = self.header
        yield request


class OciRegistry:
    """One registry host; `insecure` speaks plain HTTP (a loopback registry)."""

    def __init__(self, host: str, username: str | None = None, password: str | None = None, insecure: bool = False,
                 timeout_s: float = 300.0) -> None:
        self.host = host
        self.base = f"{'http' if insecure else 'https'}://{host}/v2"
        self._tokens = httpx.Client(timeout=30)
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=True,
                                 auth=_ChallengeAuth(username, password, self._tokens))

    def close(self) -> None:
        self.http.close()
        self._tokens.close()

    def __enter__(self) -> OciRegistry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, url: str, ok: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        try:
            answer = self.http.request(method, url if url.startswith("http") else self.base + url, **kwargs)
        except httpx.TransportError as exc:
            raise RegistryError(f"registry {self.host} cannot be reached ({exc}); check its address") from None
        if answer.status_code == 401:
            raise RegistryError(f"registry {self.host} refused the credentials (401): check the registry username "
                                "and password")
        if answer.status_code not in ok:
            detail = answer.text[:300].strip()
            raise RegistryError(f"registry {self.host}: {method} {url.split('?')[0]} answered {answer.status_code}: "
                                f"{detail}")
        return answer

    # -- manifests -------------------------------------------------------------
    def manifest(self, ref: ImageRef) -> tuple[dict[str, Any], str]:
        """The image manifest `ref` names (an index resolved to its linux/amd64 entry) and its digest."""
        accept = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST])
        answer = self._call("GET", f"/{ref.repository}/manifests/{ref.reference}", (200, 404),
                            headers={"Accept": accept})
        if answer.status_code == 404:
            raise RegistryError(f"image {ref} is not in registry {self.host}: push it there first")
        body = answer.json()
        if body.get("mediaType") in (OCI_INDEX, DOCKER_LIST) or "manifests" in body:
            for entry in body["manifests"]:
                platform = entry.get("platform") or {}
                if (platform.get("os"), platform.get("architecture")) == ("linux", "amd64"):
                    return self.manifest(ImageRef(ref.registry, ref.repository, digest=entry["digest"]))
            raise RegistryError(f"image {ref} has no linux/amd64 image")
        return body, answer.headers.get("docker-content-digest") or _digest(answer.content)

    def put_manifest(self, repository: str, tag: str, manifest: dict[str, Any]) -> str:
        data = json.dumps(manifest, separators=(",", ":")).encode()
        answer = self._call("PUT", f"/{repository}/manifests/{tag}", (201,), content=data,
                            headers={"Content-Type": manifest.get("mediaType", OCI_MANIFEST)})
        return answer.headers.get("docker-content-digest") or _digest(data)

    def delete_tag(self, ref: ImageRef) -> bool:
        """Delete the manifest `ref`'s tag points to (the distribution API deletes by digest); False when gone."""
        head = self._call("HEAD", f"/{ref.repository}/manifests/{ref.reference}", (200, 404),
                          headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
        if head.status_code == 404:
            return False
        digest = head.headers.get("docker-content-digest")
        if not digest:
            raise RegistryError(f"registry {self.host} gave no digest for {ref}")
        answer = self._call("DELETE", f"/{ref.repository}/manifests/{digest}", (202, 404, 405))
        if answer.status_code == 405:
            raise RegistryError(f"registry {self.host} does not allow deletes (405): enable storage.delete there, "
                                f"or delete {ref} by hand")
        return answer.status_code == 202

    # -- blobs -----------------------------------------------------------------
    def has_blob(self, repository: str, digest: str) -> bool:
        return self._call("HEAD", f"/{repository}/blobs/{digest}", (200, 404)).status_code == 200

    def blob(self, repository: str, digest: str) -> bytes:
        return self._call("GET", f"/{repository}/blobs/{digest}", (200,)).content

    def stream_blob(self, repository: str, digest: str) -> Iterator[bytes]:
        try:
            with self.http.stream("GET", f"{self.base}/{repository}/blobs/{digest}") as answer:
                if answer.status_code != 200:
                    raise RegistryError(f"registry {self.host}: blob {digest} of {repository}: {answer.status_code}")
                yield from answer.iter_bytes(_CHUNK)
        except httpx.TransportError as exc:
            raise RegistryError(f"registry {self.host} cannot be reached ({exc})") from None

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Link a blob another repository of this registry holds (no bytes move); False when refused."""
        answer = self._call("POST", f"/{repository}/blobs/uploads/", (201, 202),
                            params={"mount": digest, "from": source_repository})
        if answer.status_code == 202:  # an upload session was opened instead: drop it
            location = answer.headers.get("location")
            if location:
                self._call("DELETE", self._absolute(location), (204, 404, 405))
            return False
        return True

    def upload(self, repository: str, digest: str, content: Iterator[bytes] | bytes, size: int) -> None:
        """One monolithic upload (POST a session, PUT the bytes streamed)."""
        start = self._call("POST", f"/{repository}/blobs/uploads/", (202,))
        location = self._absolute(start.headers["location"])
        sep = "&" if "?" in location else "?"
        self._call("PUT", f"{location}{sep}digest={digest}", (201,), content=content,
                   headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})

    def push_file(self, repository: str, blob: Blob) -> None:
        if self.has_blob(repository, blob.digest):
            return

        def chunks() -> Iterator[bytes]:
            with blob.path.open("rb") as f:
                yield from iter(lambda: f.read(_CHUNK), b"")

        self.upload(repository, blob.digest, chunks(), blob.size)

    def push_bytes(self, repository: str, data: bytes) -> str:
        digest = _digest(data)
        if not self.has_blob(repository, digest):
            self.upload(repository, digest, data, len(data))
        return digest

    def _absolute(self, location: str) -> str:
        if location.startswith("http"):
            return location
        return self.base.removesuffix("/v2") + location


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
