"""`wallaroo-pulumi status | infer | logs` as a CI job runs them: real CLI subprocesses
against a real runtime, judged by exit status and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from .conftest import REPO, Server, server_env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wallaroo_pulumi.cli", *args], cwd=str(REPO),
                          env=env or server_env(), capture_output=True, text=True, timeout=120)


def test_status_is_a_health_gate(server: Server, double_pipeline: str) -> None:
    ok = cli("status", "--data-dir", str(server.data_dir))  # connection from the local runtime's files
    assert ok.returncode == 0, ok.stderr
    # running workers per step, so an autoscaled step's size shows in the gate's output
    row = next(line.split() for line in ok.stdout.splitlines() if line.startswith(f"{double_pipeline} "))
    assert (row[1], row[3]) == ("Running", "double=1"), ok.stdout

    env = {**server_env(), "WALLAROO_URL": server.url, "WALLAROO_TOKEN": server.token}
    gate = cli("status", double_pipeline, "not-there", "--json", "--data-dir", "/nonexistent", env=env)
    assert gate.returncode == 1
    doc = json.loads(gate.stdout)
    assert doc["healthy"] is False
    assert {r["pipeline"]: r["status"] for r in doc["pipelines"]} == {double_pipeline: "Running", "not-there": "missing"}
    assert {r["pipeline"]: r["workers"] for r in doc["pipelines"]} == {double_pipeline: {"double": 1}, "not-there": {}}


def test_infer_and_logs(server: Server, double_pipeline: str, tmp_path: Path) -> None:
    dd = ["--data-dir", str(server.data_dir)]
    out = cli("infer", double_pipeline, "--data", '[{"x": 1.5}, {"x": -2}]', *dd)
    assert out.returncode == 0, out.stderr
    assert [row["out.y"] for row in json.loads(out.stdout)] == [3.0, -4.0]

    arrow = tmp_path / "in.arrow"
    with pa.ipc.new_file(arrow, pa.schema([("x", pa.float64())])) as writer:
        writer.write_table(pa.table({"x": [21.0]}))
    out = cli("infer", double_pipeline, "--file", str(arrow), *dd)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["out.y"] == 42.0

    logged = cli("logs", double_pipeline, "--limit", "2", *dd)
    assert logged.returncode == 0, logged.stderr
    lines = [json.loads(line) for line in logged.stdout.splitlines()]
    assert len(lines) == 2 and lines[0]["in.x"] == 21.0  # newest first


def test_errors_name_the_problem_and_set_the_exit_status(server: Server, double_pipeline: str) -> None:
    dd = ["--data-dir", str(server.data_dir)]
    bad = cli("infer", double_pipeline, "--data", "{not json", *dd)
    assert bad.returncode == 2 and "--data is not JSON" in bad.stderr
    wrong = cli("infer", double_pipeline, "--data", '[{"x": "text"}]', *dd)
    assert wrong.returncode == 1 and "x" in wrong.stderr
    denied = cli("status", "--url", server.url, "--token", "not-the-token-0123456789")
    assert denied.returncode == 1 and ("401" in denied.stderr or "token" in denied.stderr.lower()), denied.stderr
    assert "not-the-token-0123456789" not in denied.stderr
    nowhere = cli("status", "--data-dir", "/nonexistent")
    assert nowhere.returncode == 2 and "pass --url, set WALLAROO_URL" in nowhere.stderr
