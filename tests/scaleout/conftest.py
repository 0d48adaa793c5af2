"""Fixtures for the scale-out backends: one private PostgreSQL server for the session (a fresh
database per runtime) and runtimes started on it with `--database`, so tests written for the
embedded default run here unchanged against PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import Server, server_env
from wallaroo_pulumi.testing.postgres import PostgresServer

SECRETS_KEY = "scaleout-tests-sealing-key-0123456789"
ADMIN_TOKEN = "scaleout-admin-token-0123456789abcdef"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    srv = PostgresServer().start()
    yield srv
    srv.stop()


def scaleout_env() -> dict[str, str]:
    env = server_env()
    env["WALLAROO_SECRETS_KEY"] = SECRETS_KEY
    env["WALLAROO_ADMIN_TOKEN"] = ADMIN_TOKEN
    return env


def scaleout_args(postgres: PostgresServer, database: str | None = None) -> list[str]:
    return ["--database", database or postgres.new_database()]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Server]:
    """As tests/runtime's shared runtime (20 MiB uploads, 1 MiB requests), on PostgreSQL."""
    root = tmp_path_factory.mktemp("runtime-pg")
    srv = Server(root / "data", ["--max-upload-bytes", "20Mi", "--max-request-bytes", "1Mi", *scaleout_args(postgres)],
                 scaleout_env())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path: Path, postgres: PostgresServer) -> Iterator:
    """As tests/runtime's factory: make_server(name, *args) on a database of that name's own."""
    servers: list[Server] = []
    databases: dict[str, str] = {}

    def factory(name: str = "data", *args: str, start: bool = True) -> Server:
        database = databases.setdefault(name, postgres.new_database())
        srv = Server(tmp_path / name, [*args, *scaleout_args(postgres, database)], scaleout_env())
        servers.append(srv)
        return srv.start() if start else srv

    yield factory
    for srv in servers:
        srv.stop()
