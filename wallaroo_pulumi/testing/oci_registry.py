"""A private OCI registry for tests: Debian's `docker-registry` (the CNCF distribution registry)
on a free loopback port, its storage in a fresh temp dir, htpasswd (bcrypt) auth, deletes enabled
so a test can see a tag go. Found, never installed: scripts/test-setup installs the package."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import httpx

from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.testing.processes import Harness

BINARY = "docker-registry"


def registry_binary() -> str:
    path = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else None)
    if path is None:
        raise RuntimeError(f"{BINARY} is missing: apt-get install docker-registry (scripts/test-setup installs it)")
    return path


class OciRegistry(Harness):
    """`start()`; `host` ("127.0.0.1:PORT"), `username`, `password`; `stop()` removes its storage.
    `address`: where it listens (the real node's bridge address, for pods to reach it)."""

    def __init__(self, username: str = "publisher", timeout_s: float = 30, address: str = "127.0.0.1") -> None:
        import bcrypt  # the registry's htpasswd takes bcrypt hashes only

        self.binary = registry_binary()
        self.root = Path(tempfile.mkdtemp(prefix="wallaroo-registry-"))
        super().__init__(self.root)
        self.timeout_s = timeout_s
        self.port = free_port()
        self.host = f"{address}:{self.port}"
        self.username = username
        self.password = secrets.token_urlsafe(18)
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5)).decode()
        (self.root / "htpasswd").write_text(f"{username}:{hashed}\n")
        (self.root / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: {secrets.token_hex(16)}\n"
            f"auth:\n  htpasswd:\n    realm: wallaroo-test\n    path: {self.root / 'htpasswd'}\n"
        )

    def _start(self) -> None:
        registry = self.spawn("registry", [self.binary, "serve", str(self.root / "config.yml")])
        # up, and asking for auth
        self.wait("docker-registry", [registry],
                  lambda: httpx.get(f"http://{self.host}/v2/", timeout=2).status_code == 401, self.timeout_s)

    @property
    def auth(self) -> tuple[str, str]:
        return self.username, self.password

    def tags(self, repository: str) -> list[str]:
        """The repository's tags, as the registry lists them (empty when it has none)."""
        answer = httpx.get(f"http://{self.host}/v2/{repository}/tags/list", auth=self.auth, timeout=10)
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        return answer.json().get("tags") or []

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)
