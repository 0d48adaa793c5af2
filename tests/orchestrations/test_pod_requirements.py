"""A task pod needs no package index (D60): the start script a task Job runs (kube/task_start.py, run here as
the pod would run it, against the real runtime) fetches the requirement folders packaging installed and
runs main.py on them, without pip; a key of another workspace gets nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.orchestrations.conftest import tiny_wheel, upload, zip_of
from tests.runtime.conftest import Server
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.runtime.kube.task_objects import START

MAIN = "import tinydep\nprint('tinydep says', tinydep.VALUE, 'from', tinydep.__file__)\n"


def _key(server: Server, workspace_id: int) -> str:
    r = httpx.post(f"{server.url}/v1/api/keys/create", headers=server.headers, timeout=30,
                   json={"name": f"pod-{workspace_id}", "role": "deployer", "workspace_id": workspace_id})
    assert r.status_code in (200, 201), r.text
    return r.json()["secret"]


def _pod(tmp: Path, server: Server, zip_bytes: bytes, orch_id: str, key: str) -> subprocess.CompletedProcess:
    """task_start.py as a task pod runs it: the Secret's files in RUN_DIR, the Job's environment."""
    run_dir, home = tmp / "run", tmp / "home"
    run_dir.mkdir(parents=True)
    home.mkdir()
    (run_dir / "orchestration.zip").write_bytes(zip_bytes)
    (run_dir / "keycloak.json").write_text(json.dumps({"access_token": key}))
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "WALLAROO_URL": server.url, "WALLAROO_ORCH_ID": orch_id, "PIP_NO_INDEX": "1"}
    return subprocess.run([sys.executable, str(START), str(run_dir), "."], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_task_pod_runs_on_the_requirements_installed_at_packaging(orch_client: WallarooClient,
                                                                    orch_server: Server, tmp_path: Path) -> None:
    wheel_name, wheel = tiny_wheel(value="packaged")
    files = zip_of({"main.py": MAIN, "requirements.txt": "--no-index\n--find-links wheels\ntinydep==1.0\n",
                    f"wheels/{wheel_name}": wheel})
    orch = upload(orch_client, files, "pod-deps")
    done = _pod(tmp_path / "a", orch_server, files, orch.id, _key(orch_server, 1))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[runtime] requirements: the 1 folder(s) installed at packaging" in done.stdout
    assert "installing requirements.txt" not in done.stdout  # no pip, no index
    said = next(line for line in done.stdout.splitlines() if line.startswith("tinydep says"))
    assert said.startswith("tinydep says packaged from ") and "/home/requirements/0/tinydep/" in said, said

    # a key of another workspace gets neither the requirements nor the orchestration's name
    other = orch_client.create_workspace("pod-elsewhere").id
    r = httpx.post(f"{orch_server.url}/v1/api/orchestration/requirements", json={"id": orch.id}, timeout=30,
                   headers={"Authorization": f"Bearer {_key(orch_server, other)}"})
    assert r.status_code == 403, r.text


def test_an_orchestration_without_requirements_has_none_to_fetch(orch_client: WallarooClient,
                                                                 orch_server: Server) -> None:
    orch = upload(orch_client, {"main.py": "print('plain')\n"}, "pod-plain")
    r = httpx.post(f"{orch_server.url}/v1/api/orchestration/requirements", json={"id": orch.id},
                   headers=orch_server.headers, timeout=30)
    assert r.status_code == 204, r.text
