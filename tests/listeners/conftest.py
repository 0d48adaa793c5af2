"""Fixtures for listener tests: a real runtime Database + LogStore in a temp data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from wallaroo_pulumi.runtime.store.db import Database, SqliteDatabase
from wallaroo_pulumi.runtime.store.logs import LogStore


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def db(data_dir: Path) -> Database:
    d = SqliteDatabase(data_dir / "runtime.db")
    yield d
    d.close()


@pytest.fixture
def logstore(data_dir: Path) -> LogStore:
    s = LogStore(data_dir / "logs")
    yield s
    s.close()
