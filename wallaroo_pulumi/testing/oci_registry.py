"""A private OCI registry for tests: Debian's `docker-registry` (the CNCF distribution registry)
on a free loopback port, its storage in a fresh temp dir, htpasswd (bcrypt) auth, deletes enabled
so a test can see a tag go. Found, never installed: scripts/test-setup installs the package."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from wallaroo_pulumi.ports import free_port

BINARY = "docker-registry"


def registry_binary() -> str:
    path = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else None)
    if path is None:
        raise RuntimeError(f"{BINARY} is missing: apt-get install docker-registry (scripts/test-setup installs it)")
    return path


class OciRegistry:
    """`start()`; `host` ("127.0.0.1:PORT"), `username`, `password`; `stop()` removes its storage."""

    def __init__(self, username: str = "publisher") -> None:
        import bcrypt  # the registry's htpasswd takes bcrypt hashes only

        self.binary = registry_binary()
        self.root = Path(tempfile.mkdtemp(prefix="wallaroo-registry-"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
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
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> OciRegistry:
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - the registry's, closed when it exits
        self.proc = subprocess.Popen([self.binary, "serve", str(self.root / "config.yml")], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=2).status_code == 401:  # up, and asking for auth
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start:\n{self.log_tail()}")

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

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.root / "registry.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> OciRegistry:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
