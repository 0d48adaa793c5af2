"""Artifacts in a bucket, for replicas on many hosts: `artifacts/sha256/<hex>` objects, each
replica keeping a local copy of those it uses. An upload is committed locally, then streamed
to the bucket, and only then recorded in the database, so a replica killed mid-upload leaves
no version anyone can see (an unfinished multipart upload is not an object)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.store.artifacts import ArtifactStore
from wallaroo_pulumi.runtime.store.object_store import CHUNK, ObjectStore


class RemoteArtifactStore(ArtifactStore):
    def __init__(self, root: Path, bucket: ObjectStore) -> None:
        super().__init__(root)
        self.bucket = bucket

    @staticmethod
    def key(sha: str) -> str:
        return f"artifacts/sha256/{sha}"

    def publish(self, sha: str, path: Path) -> None:
        if not self.bucket.exists(self.key(sha)):
            self.bucket.put_file(path, self.key(sha))

    def fetch(self, sha: str) -> Path:
        """The local copy, downloaded from the bucket on first use and checked against its sha256."""
        local = self.path_for(sha)
        if local.exists():
            return local
        if not self.bucket.exists(self.key(sha)):
            return local  # the caller says it is missing
        tmp = self.tmp_dir / f"fetch-{sha}"
        self.bucket.get_file(self.key(sha), tmp)
        digest = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != sha:
            tmp.unlink(missing_ok=True)
            raise WallarooError(f"artifact {sha} in {self.bucket.describe()} does not match its sha256")
        tmp.replace(local)
        return local

    def exists(self, sha: str) -> bool:
        return self.path_for(sha).exists() or self.bucket.exists(self.key(sha))

    def delete(self, sha: str) -> None:
        super().delete(sha)
        self.bucket.delete(self.key(sha))
