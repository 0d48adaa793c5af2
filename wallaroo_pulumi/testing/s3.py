"""An S3-compatible server for tests: moto's server (the `moto[server]` test extra) as a
subprocess on a free loopback port, and the environment a runtime reads to reach it."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.testing.processes import Harness

#: moto keeps a body sent with the AWS SDK's optional checksums (aws-chunked) as is: the clients
#: of a moto server send checksums only where S3 requires them (S3 and MinIO take either).
CLIENT_ENV = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key-never-logged"


class S3Server(Harness):
    """`start()`, `new_bucket()` for an s3:// URL, `env` for a runtime; `stop()`."""

    def __init__(self, timeout_s: float = 60) -> None:
        self.port = free_port()
        self.timeout_s = timeout_s
        super().__init__(Path(tempfile.mkdtemp(prefix="wallaroo-s3-")))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, **CLIENT_ENV}

    def _start(self) -> None:
        os.environ.update(CLIENT_ENV)  # this process's clients too (the AWS SDK reads its environment)
        moto = self.spawn("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)])
        self.wait("moto server", [moto], lambda: httpx.get(self.endpoint + "/", timeout=2) is not None, self.timeout_s)

    def new_bucket(self) -> str:
        """A fresh empty bucket; its s3:// URL (with a prefix, as users give)."""
        from pyarrow import fs

        name = "b-" + uuid.uuid4().hex[:12]
        s3 = fs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http", region="us-east-1",
                             access_key=ACCESS_KEY, secret_key=SECRET_KEY, allow_bucket_creation=True)
        s3.create_dir(name)
        return f"s3://{name}/wallaroo"
