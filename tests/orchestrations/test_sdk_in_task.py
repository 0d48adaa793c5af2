"""The real Wallaroo SDK inside a task lists what its run's key sees, as Wallaroo answers a caller: with no
workspace named, `wl.list_orchestrations()` and `wl.list_tasks()` answer the task's own workspace (the
key is scoped to it) instead of a 403 for asking every workspace (D59)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.orchestrations.conftest import upload, zip_of
from tests.runtime.conftest import Server, server_env
from tests.wire.conftest import sdk_python  # noqa: F401 - the fixture: the pinned SDK's python

LISTS = """
import json
import wallaroo

wl = wallaroo.Client()                      # the run's own key, found by the SDK
print(json.dumps({"orchestrations": sorted(o.name() for o in wl.list_orchestrations()),
                  "tasks": sorted(t.name() for t in wl.list_tasks())}))
"""


@pytest.fixture(scope="module")
def sdk_server(sdk_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    srv = Server(tmp_path_factory.mktemp("sdk-in-task") / "data", ["--task-python", sdk_python], server_env()).start()
    yield srv
    srv.stop()


@pytest.mark.timeout(600)
def test_list_orchestrations_and_tasks_inside_a_task_answer_its_own_workspace(sdk_server: Server) -> None:
    with sdk_server.client(timeout=120) as c:
        elsewhere = c.create_workspace("elsewhere")
        other = c.wait_for_orchestration(c.upload_orchestration(zip_of({"main.py": "print('other')\n"}), "other.zip",
                                                                name="other-workspace", workspace_id=elsewhere.id).id)
        c.create_task("other-task", {}, orch_id=other.id, workspace_id=elsewhere.id)
        orch = upload(c, {"main.py": LISTS}, "lister")
        task = c.create_task("lists", {}, orch_id=orch.id, timeout_s=300)
        run = c.wait_for_run(task.id, timeout_s=300)
        logs = [line.split(" ", 1)[1] for line in c.task_run_logs(run.id)]
        assert run.status == "success", logs
        seen = json.loads(next(line for line in logs if line.startswith("stdout F {"))[len("stdout F "):])
        assert "lister" in seen["orchestrations"] and "other-workspace" not in seen["orchestrations"], seen
        assert seen["tasks"] == ["lists"], seen
    # the admin key, naming no workspace, still lists every workspace's
    answer = httpx.post(f"{sdk_server.url}/v1/api/orchestration/list_all", json={"task_run_status": [],
                        "workspace_ids": []}, headers=sdk_server.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert {"lister", "other-workspace"} <= {o["orchestration"]["name"] for o in answer.json()["orchestrations"]}
