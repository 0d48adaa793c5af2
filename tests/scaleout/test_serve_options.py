"""`runtime serve --database/--object-store`: a bad URL or an unreachable server is one line
naming the option, and the database password never shows."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.conftest import REPO, server_env


def serve(tmp_path: Path, *args: str, key: bool = True) -> subprocess.CompletedProcess[str]:
    env = server_env()
    env.pop("WALLAROO_SECRETS_KEY", None)
    if key:
        env["WALLAROO_SECRETS_KEY"] = "serve-options-sealing-key-0123"
    return subprocess.run([sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "serve", "--data-dir",
                           str(tmp_path / "d"), *args], env=env, cwd=str(REPO), capture_output=True, text=True, timeout=120)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("args", "key", "message"), [
    (["--database", "mysql://u:pw-not-shown@db/x"], True, "database: expected a postgresql://"),
    (["--database", "postgresql://u:pw-not-shown@127.0.0.1:1/x"], False, "give the sealing key in $WALLAROO_SECRETS_KEY"),
    (["--object-store", "gs://bucket"], True, "object_store: expected s3://bucket"),
])
def test_bad_options_are_one_line_naming_the_option(tmp_path: Path, args: list[str], key: bool, message: str) -> None:
    done = serve(tmp_path, *args, key=key)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "pw-not-shown" not in done.stdout + done.stderr


def test_an_unreachable_database_says_why_without_the_password(tmp_path: Path) -> None:
    done = serve(tmp_path, "--database", f"postgresql://wallaroo:pw-not-shown@127.0.0.1:{closed_port()}/x")
    assert done.returncode == 1, done.stderr
    assert "database: cannot connect to PostgreSQL wallaroo@127.0.0.1" in done.stderr and "Connection refused" in done.stderr
    assert "Traceback" not in done.stderr and "pw-not-shown" not in done.stdout + done.stderr
