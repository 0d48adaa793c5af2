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
import time
import uuid
from pathlib import Path

from wallaroo_pulumi.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def _bindir() -> Path:
    """Found, never installed: installing is the setup phase's (scripts/test-setup, scripts/postgres)."""
    out = subprocess.run([str(REPO / "scripts" / "postgres"), "--check"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{out.stderr.strip()}: run scripts/postgres (it installs Debian's postgresql) or set WALLAROO_PG_BINDIR")
    return Path(out.stdout.strip().splitlines()[-1])


class PostgresServer:
    """`start()`, then `new_database()` for a URL per test or runtime; `stop()` removes everything."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="wallaroo-pg-"))
        self.port = free_port()
        self.user = None if os.geteuid() != 0 else _unprivileged()
        self.proc: subprocess.Popen[bytes] | None = None

    def _run_as(self) -> dict[str, int]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid}

    def start(self, timeout: float = 60) -> PostgresServer:
        data = self.root / "data"
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--locale=C"],
            check=True, capture_output=True, **self._run_as(),  # type: ignore[call-overload]
        )
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server's, closed when it exits
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            **self._run_as(),  # type: ignore[call-overload]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}):\n{self.log_tail()}")
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start:\n{self.log_tail()}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: ends open sessions
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def _unprivileged() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")
