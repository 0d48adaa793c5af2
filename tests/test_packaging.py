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


def test_wheel_ships_components_and_byop_folders(tmp_path: Path) -> None:
    """`pip install wallaroo-pulumi` users get LocalRuntime and every ready BYOP model."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"  # setuptools builds in the source tree: keep the checkout clean
    for name in ("pyproject.toml", "setup.py", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(repo / name, source / name)
    for name in ("wallaroo_pulumi", "mac", "components"):
        shutil.copytree(repo / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))).namelist())
    expected = {"wallaroo_pulumi/components/local_runtime.py", "wallaroo_pulumi/components/byop/openai_llm/main.py",
                "wallaroo_pulumi/components/byop/vertex_llm/main.py", "wallaroo_pulumi/components/byop/azure_llm/main.py",
                "wallaroo_pulumi/pulumi_host/dynamic_provider.py", "mac/inference/__init__.py",
                "wallaroo_pulumi/runtime/services/publish/chart_templates/deployment.yaml",  # a publish's Helm chart
                "wallaroo_pulumi/runtime/services/publish/chart_templates/_helpers.tpl"}
    expected |= {f"wallaroo_pulumi/components/byop/listeners/{n}/model.py"
                 for n in ("toxicity", "sentiment", "profanity", "hate", "combined", "validator")}
    assert expected <= names, sorted(expected - names)
