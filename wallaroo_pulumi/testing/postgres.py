"""A private PostgreSQL server for tests: initdb in a fresh directory, listening on a free
loopback port (and a socket in that directory), trust authentication, durability traded for
speed (fsync off). As root it runs as the `postgres` user (or `nobody`): initdb refuses root.
The server binaries come from `scripts/postgres` (Debian's; scripts/test-setup installs them when missing)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.testing.processes import Harness

REPO = Path(__file__).resolve().parents[2]


def _bindir() -> Path:
    """Found, never installed: installing is the setup phase's (scripts/test-setup, scripts/postgres)."""
    out = subprocess.run([str(REPO / "scripts" / "postgres"), "--check"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{out.stderr.strip()}: run scripts/postgres (it installs Debian's postgresql) or set WALLAROO_PG_BINDIR")
    return Path(out.stdout.strip().splitlines()[-1])


class PostgresServer(Harness):
    """`start()`, then `new_database()` for a URL per test or runtime; `stop()` removes everything."""

    def __init__(self, timeout_s: float = 60) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="wallaroo-pg-"))
        self.port = free_port()
        self.timeout_s = timeout_s
        self.user = None if os.geteuid() != 0 else _unprivileged()
        super().__init__(self.root, **({} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid}))

    def _start(self) -> None:
        data = self.root / "data"
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--locale=C"],
            check=True, capture_output=True, **self.popen,
        )
        server = self.spawn("postgres", [
            str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
            "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "max_connections=200"])
        self.wait("postgres", [server], lambda: subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True).returncode == 0, self.timeout_s)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        for server in self.servers:
            server.stop(grace_s=30, sig=signal.SIGINT)  # fast shutdown: ends open sessions
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _unprivileged() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")
