"""The runtime's debug memory profile ($WALLAROO_TRACEMALLOC_MINUTES, D62) on a REAL runtime: off
unless asked for; on, it writes its snapshots (allocation sites by line, and the numbers that tell
Python heap, allocator and Arrow memory apart) into the data dir; a bad value stops the start
with the variable named."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.runtime.conftest import REPO, Server, server_env


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was not written within {timeout} s"
        time.sleep(0.2)


def test_snapshots_name_our_allocation_sites_and_the_memory_numbers(tmp_path: Path) -> None:
    env = {**server_env(), "WALLAROO_TRACEMALLOC_MINUTES": "0.02"}
    srv = Server(tmp_path / "data", [], env).start()
    try:
        for _ in range(20):
            assert httpx.get(srv.url + "/health").status_code == 200
        _wait_for(srv.data_dir / "memprofile" / "snap-1.txt")
        numbers = json.loads((srv.data_dir / "memprofile" / "snap-1.json").read_text())
        text = (srv.data_dir / "memprofile" / "snap-1.txt").read_text()
    finally:
        srv.stop()
    assert numbers["rss"] > 10 * 2**20 and numbers["rss_after_trim"] > 10 * 2**20
    assert numbers["traced"] > 2**20  # the app's own modules and objects, traced since the start
    assert numbers["malloc"]["arena"] >= numbers["malloc"]["in_use"] > 0
    assert set(numbers["arrow"]) >= {"total_allocated", "bytes_allocated", "max_memory"}
    assert "## top sites by line" in text and "## change since the previous snapshot" in text
    assert "wallaroo_pulumi/runtime/" in text
    assert (srv.data_dir / "memprofile" / "snap-1.tracemalloc").stat().st_size > 0


def test_frames_zero_records_the_numbers_without_tracemalloc(tmp_path: Path) -> None:
    env = {**server_env(), "WALLAROO_TRACEMALLOC_MINUTES": "0.02", "WALLAROO_TRACEMALLOC_FRAMES": "0"}
    srv = Server(tmp_path / "data", [], env).start()
    try:
        _wait_for(srv.data_dir / "memprofile" / "snap-1.json")
    finally:
        srv.stop()
    numbers = json.loads((srv.data_dir / "memprofile" / "snap-1.json").read_text())
    assert numbers["traced"] == 0 and numbers["rss"] > 0
    assert not list((srv.data_dir / "memprofile").glob("*.tracemalloc"))


def test_off_by_default_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", [], server_env()).start()
    srv.stop()
    assert not (srv.data_dir / "memprofile").exists()
    done = subprocess.run(
        [sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "serve", "--data-dir", str(tmp_path / "bad"),
         "--port", "0"], env={**server_env(), "WALLAROO_TRACEMALLOC_MINUTES": "often"}, cwd=REPO,
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "WALLAROO_TRACEMALLOC_MINUTES must be a number of minutes" in done.stderr + done.stdout


def test_the_runtime_allocates_arrow_memory_from_jemalloc_unless_told_otherwise(tmp_path: Path) -> None:
    """D62: jemalloc hands back what any thread freed; mimalloc (Arrow's default) kept it per thread."""
    seen = {}
    env = {k: v for k, v in server_env().items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    for name, extra in (("default", {}), ("asked", {"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"})):
        srv = Server(tmp_path / name, [], {**env, **extra}).start()
        try:
            seen[name] = httpx.get(srv.url + "/health").json()["arrow_memory_pool"]
        finally:
            srv.stop()
    assert seen == {"default": "jemalloc", "asked": "mimalloc"}
