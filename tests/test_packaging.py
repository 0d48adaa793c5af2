"""Deterministic packing: the hash `preview` uses must depend on content alone."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from wallaroo_pulumi import packaging


def _model(folder: Path, body: str = "x = 1\n") -> Path:
    (folder / "pkg").mkdir(parents=True)
    (folder / "model.py").write_text(body)
    (folder / "pkg" / "util.py").write_text("y = 2\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "model.cpython-311.pyc").write_bytes(os.urandom(32))
    return folder


def test_same_content_same_hash_regardless_of_mtime_and_order(tmp_path: Path) -> None:
    a = _model(tmp_path / "a")
    b = _model(tmp_path / "b")
    os.utime(b / "model.py", (1_000_000, 1_000_000))
    assert packaging.content_sha256(a) == packaging.content_sha256(b)


def test_content_change_changes_hash(tmp_path: Path) -> None:
    a = _model(tmp_path / "a")
    b = _model(tmp_path / "b", body="x = 2\n")
    assert packaging.content_sha256(a) != packaging.content_sha256(b)


def test_pack_skips_caches_and_keeps_relative_layout(tmp_path: Path) -> None:
    artifact = packaging.pack(_model(tmp_path / "a"), tmp_path)
    names = zipfile.ZipFile(artifact.path).namelist()
    assert names == ["model.py", "pkg/util.py"]
    assert artifact.size == artifact.path.stat().st_size


def test_zip_is_used_as_is(tmp_path: Path) -> None:
    artifact = packaging.pack(_model(tmp_path / "a"), tmp_path)
    again = packaging.pack(artifact.path)
    assert again.path == artifact.path and again.sha256 == artifact.sha256


@pytest.mark.parametrize("kind", ["missing", "not-zip", "no-python"])
def test_bad_sources_are_named(tmp_path: Path, kind: str) -> None:
    source = tmp_path / "src"
    if kind == "not-zip":
        source.write_text("hello")
    elif kind == "no-python":
        source.mkdir()
        (source / "README").write_text("hi")
    with pytest.raises((FileNotFoundError, ValueError), match=str(source)):
        packaging.pack(source)
