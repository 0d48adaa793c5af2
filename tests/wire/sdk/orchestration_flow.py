"""Runs INSIDE the pinned Wallaroo SDK's venv: the SDK's orchestration flow, unchanged, against the
runtime: upload_orchestration, status() until ready, list_orchestrations, run_once, run_scheduled,
run_continuously, list_tasks (client and orchestration), last_runs, logs, kill. Prints one JSON object.

usage: python orchestration_flow.py URL TOKEN WORKDIR ORCHESTRATION_ZIP
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

url, token, workdir, orch_zip = sys.argv[1:5]
credentials = Path(workdir) / "credentials.json"
credentials.write_text(json.dumps({"token": token, "user_email": "sdk@example.com", "user_id": "sdk-user"}))
os.environ["WALLAROO_SDK_CREDENTIALS"] = str(credentials)

import wallaroo  # noqa: E402

out: dict = {}
wl = wallaroo.Client(api_endpoint=url, auth_type="token")
orch = wl.upload_orchestration(path=orch_zip, name="evaluation-job")
deadline = time.monotonic() + 300
while orch.status() not in ("ready", "error"):
    assert time.monotonic() < deadline, orch.status()
    time.sleep(0.5)
out["orchestration"] = {"status": orch.status(), "name": orch.name(), "file_name": orch.file_name(),
                        "sha": orch.sha(), "workspace_id": orch.workspace_id()}
out["listed"] = sorted(o.name() for o in wl.list_orchestrations())
args = {"pipeline": "chat", "scores": "chat-eval-scores"}


def finished_runs(task, n: int, timeout: float = 180) -> list:
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in task.last_runs() if r._status != "running"]
        if len(runs) >= n:
            return runs
        assert time.monotonic() < deadline, f"{task.name()}: {len(runs)} finished runs"
        time.sleep(0.5)


once = orch.run_once(name="score-once", json_args=args, timeout=300)
[run] = finished_runs(once, 1)
out["once"] = {"type": once.task_type(), "status": run._status, "logs": list(run.logs())}

cron = orch.run_scheduled(name="score-cron", schedule="* * * * * */20", json_args=args, timeout=300)
cron_runs = finished_runs(cron, 2, 300)
out["cron"] = {"type": cron.task_type(), "statuses": sorted({r._status for r in cron_runs}), "runs": len(cron_runs)}

forever = orch.run_continuously(name="score-forever", json_args=args)
forever_runs = finished_runs(forever, 2, 300)
out["continuous"] = {"type": forever.task_type(), "statuses": sorted({r._status for r in forever_runs})}

out["list_tasks"] = sorted(t.name() for t in wl.list_tasks())
out["orch_tasks"] = sorted(t.name() for t in orch.list_tasks())
out["killed"] = [cron.kill(), forever.kill()]
out["list_tasks_after_kill"] = sorted(t.name() for t in wl.list_tasks())
print(json.dumps(out, default=str))
