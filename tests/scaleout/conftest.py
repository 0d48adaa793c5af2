"""Fixtures for the scale-out backends: one private PostgreSQL server and one S3-compatible
server (moto) for the session, a fresh database and bucket per runtime, and runtimes started
on them with `--database` and `--object-store`, so tests written for the embedded default run
here unchanged against PostgreSQL + object storage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import Server, server_env
from wallaroo_pulumi.testing.postgres import PostgresServer
from wallaroo_pulumi.testing.s3 import S3Server

SECRETS_KEY = "scaleout-tests-sealing-key-0123456789"
ADMIN_TOKEN = "scaleout-admin-token-0123456789abcdef"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    srv = PostgresServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    srv = S3Server().start()
    yield srv
    srv.stop()


def scaleout_env(s3: S3Server) -> dict[str, str]:
    env = {**server_env(), **s3.env}
    env["WALLAROO_SECRETS_KEY"] = SECRETS_KEY
    env["WALLAROO_ADMIN_TOKEN"] = ADMIN_TOKEN
    return env


def scaleout_args(postgres: PostgresServer, s3: S3Server, database: str | None = None,
                   bucket: str | None = None) -> list[str]:
    return ["--database", database or postgres.new_database(), "--object-store", bucket or s3.new_bucket()]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer, s3: S3Server) -> Iterator[Server]:
    """As tests/runtime's shared runtime (20 MiB uploads, 1 MiB requests), on PostgreSQL."""
    root = tmp_path_factory.mktemp("runtime-pg")
    srv = Server(root / "data", ["--max-upload-bytes", "20Mi", "--max-request-bytes", "1Mi", *scaleout_args(postgres, s3)],
                 scaleout_env(s3))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path: Path, postgres: PostgresServer, s3: S3Server) -> Iterator:
    """As tests/runtime's factory: make_server(name, *args) on a database and bucket of that name's own."""
    servers: list[Server] = []
    shared: dict[str, tuple[str, str]] = {}

    def factory(name: str = "data", *args: str, start: bool = True) -> Server:
        if name not in shared:
            shared[name] = (postgres.new_database(), s3.new_bucket())
        srv = Server(tmp_path / name, [*args, *scaleout_args(postgres, s3, *shared[name])], scaleout_env(s3))
        servers.append(srv)
        return srv.start() if start else srv

    yield factory
    for srv in servers:
        srv.stop()
