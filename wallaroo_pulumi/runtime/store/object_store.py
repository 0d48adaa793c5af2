"""An S3-compatible bucket (AWS S3, MinIO, GCS or Azure through their S3 APIs) under one prefix,
through pyarrow's S3 filesystem: writes are streamed (multipart uploads of bounded parts, so
memory stays flat whatever the size) and an object appears whole or not at all.

Endpoint, region and credentials come from the environment (AWS_ENDPOINT_URL or
AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
or the AWS SDK's other sources: a mounted Secret, an instance role); they are never logged."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlparse

from pyarrow import fs

CHUNK = 8 * 2**20


class ObjectStore:
    def __init__(self, url: str, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"object_store: expected s3://bucket[/prefix], got {url!r}")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        options: dict[str, object] = {"region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
                                      "allow_bucket_creation": True}  # only ensure_bucket creates one
        self.endpoint = None
        if endpoint:
            ep = urlparse(endpoint)
            self.endpoint = ep.netloc or ep.path
            options.update(endpoint_override=self.endpoint, scheme=ep.scheme or "https")
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):  # else the SDK's own sources (a role)
            options.update(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                           session_token=env.get("AWS_SESSION_TOKEN"))
        self.fs = fs.S3FileSystem(**options)  # type: ignore[arg-type]

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (a fresh MinIO); a ValueError naming it if that fails."""
        try:
            missing = self.fs.get_file_info(self.bucket).type == fs.FileType.NotFound
        except OSError:  # not allowed to look: take it as there
            return
        if missing:
            try:
                self.fs.create_dir(self.bucket)
            except OSError as exc:
                raise ValueError(f"object_store: bucket {self.bucket!r} does not exist and cannot be created: {exc}") from None

    def path(self, key: str) -> str:
        return "/".join(p for p in (self.bucket, self.prefix, key) if p)

    def put_file(self, local: Path, key: str) -> None:
        """Stream `local` to `key` (a multipart upload, completed only when all of it is sent)."""
        with open(local, "rb") as src, self.fs.open_output_stream(self.path(key)) as dst:
            shutil.copyfileobj(src, dst, CHUNK)

    def get_file(self, key: str, local: Path) -> None:
        """Stream `key` into `local` (written under a temporary name, renamed when whole)."""
        tmp = local.with_name(f".{local.name}.part-{uuid.uuid4().hex}")  # readers in several threads
        with self.fs.open_input_stream(self.path(key)) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        os.replace(tmp, local)

    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self.path(key)).type == fs.FileType.File

    def delete(self, key: str) -> None:
        try:
            self.fs.delete_file(self.path(key))
        except FileNotFoundError:
            pass

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.path('')}{where}"
