"""Log retention (`--log-retention`): old inference logs leave the data dir, new ones keep coming."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.settings import parse_duration
from wallaroo_pulumi.runtime.store.logs import LogStore

from .conftest import DOUBLE, REPO, X_SCHEMA, Y_SCHEMA, make_model, server_env


def rows(times_ms: list[int]) -> pa.Table:
    return pa.table({"time": times_ms, "in.x": [float(t) for t in times_ms]})


def test_prune_removes_whole_old_segments_and_numbering_goes_on(tmp_path: Path) -> None:
    writer = LogStore(tmp_path, segment_rows=2)
    reader = LogStore(tmp_path)  # a serving replica that indexed the segments before they went
    writer.append("p", rows([1_000, 2_000]))
    writer.append("p", rows([3_000, 9_000]))  # straddles the cutoff: kept whole
    writer.append("p", rows([10_000]))  # the active segment
    assert len(reader.query("p", limit=10).table) == 5

    assert writer.prune(5_000) == {"p": (1, 2)}
    assert writer.query("p", limit=10).table.column("in.x").to_pylist() == [3_000.0, 9_000.0, 10_000.0]
    assert reader.query("p", limit=10).table.column("in.x").to_pylist() == [3_000.0, 9_000.0, 10_000.0]

    # an idle pipeline's active segment holding only old rows goes too; numbers never restart
    assert writer.prune(20_000) == {"p": (2, 3)}
    assert len(reader.query("p", limit=10).table) == 0
    writer.append("p", rows([30_000]))
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names == ["000000000003.pruned", "000000000004.arrows"], names
    assert reader.query("p", limit=10).table.column("in.x").to_pylist() == [30_000.0]


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("2.5s", 2.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_retention_is_a_clear_startup_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "serve", "--data-dir", str(tmp_path / "d"),
         "--log-retention", "3 weeks"], env=server_env(), cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--log-retention" in proc.stderr and "like 30d, 12h, 90m or 3600s" in proc.stderr and "'3 weeks'" in proc.stderr


def test_runtime_prunes_logged_inferences_past_retention(make_server, tmp_path: Path) -> None:
    srv = make_server("data", "--log-retention", "2s")
    with srv.client() as c:
        mv = c.upload_model("double", make_model(tmp_path, "double", DOUBLE), X_SCHEMA, Y_SCHEMA)
        created = c.create_pipeline("kept", steps=[mv])
        c.deploy("kept", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
        c.wait_for_deployment("kept", timeout_s=60)
        c.infer("kept", pa.table({"x": [1.0, 2.0, 3.0]}))
        assert len(c.logs("kept", limit=100)) == 3

        deadline = time.monotonic() + 15
        while len(c.logs("kept", limit=100)) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert len(c.logs("kept", limit=100)) == 0, srv.log_tail()
        metrics = httpx.get(f"{srv.url}/metrics", headers=srv.headers, timeout=10).text
        assert 'wallaroo_log_rows_pruned_total{pipeline="kept"} 3.0' in metrics

        c.infer("kept", pa.table({"x": [4.0]}))  # logging goes on after a prune
        assert c.logs("kept", limit=100)["in.x"].tolist() == [4.0]
    assert "log retention: removed" in srv.log_tail(100_000)
