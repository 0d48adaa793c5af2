"""Tasks of uploaded orchestrations against the real runtime: main.py runs sandboxed, once, on cron
and continuously (restarted with backoff); a failing task, one hanging past its timeout and a killed
one end with a clear status and their stdout/stderr as the run's log; a hostile task sees neither the
data directory nor another task's key or arguments nor a model's credential nor any other process,
and its own key is scoped to its workspace; a runtime killed mid-run marks the run failed when it
starts again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.orchestrations.conftest import upload
from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, Server, make_model, server_env
from wallaroo_pulumi.client import WallarooClient

FAILING = """
import sys
print("working on", open("/home/jovyan/arguments.json").read())
print("something went wrong", file=sys.stderr)
sys.exit(3)
"""
HANGING = "import time\nprint('hanging', flush=True)\ntime.sleep(600)\n"
QUICK = "import os\nprint('run of task', os.environ['WALLAROO_TASK_ID'])\n"


def _logs(client: WallarooClient, run_id: str) -> list[str]:
    """The run's lines without their timestamps."""
    return [line.split(" ", 1)[1] for line in client.task_run_logs(run_id)]


def _runs(client: WallarooClient, task_id: str, n: int, timeout_s: float) -> list:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [r for r in client.list_task_runs(task_id) if r.status != "running"]
        if len(runs) >= n:
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id}: {len(runs)} finished run(s) after {timeout_s}s, wanted {n}")
        time.sleep(0.2)


def test_a_failing_task_fails_with_its_exit_status_and_its_output_as_the_log(orch_client: WallarooClient) -> None:
    orch = upload(orch_client, {"main.py": FAILING}, "failing")
    task = orch_client.create_task("fails", {"day": "monday"}, orch_id=orch.id)
    assert (task.orch_id, task.json_args, task.type) == (orch.id, {"day": "monday"}, "run_once")
    run = orch_client.wait_for_run(task.id, timeout_s=60)
    assert (run.status, run.error) == ("failure", "main.py exited with status 3")
    logs = _logs(orch_client, run.id)
    assert 'stdout F working on {"day": "monday"}' in logs
    assert "stderr F something went wrong" in logs
    assert logs[-1] == "stderr F [runtime] failed: main.py exited with status 3"
    assert orch_client.get_task(task.id).last_run_status == "failure"


def test_a_task_past_its_timeout_is_killed_and_timed_out(orch_client: WallarooClient) -> None:
    orch = upload(orch_client, {"main.py": HANGING}, "hanging")
    started = time.monotonic()
    run = orch_client.wait_for_run(orch_client.create_task("hangs", {}, orch_id=orch.id, timeout_s=2).id, timeout_s=60)
    assert run.status == "timed_out" and time.monotonic() - started < 30
    assert run.error == "timed out after 2s (timeout): main.py was killed"
    assert "stdout F hanging" in _logs(orch_client, run.id)


def test_a_task_past_its_memory_is_killed_by_the_kernel(orch_client: WallarooClient) -> None:
    hog = "print('allocating', flush=True)\nhog = bytearray(3 * 2**30)\nprint('survived')\n"
    run = orch_client.wait_for_run(orch_client.create_task("hog", {}, orch_id=upload(orch_client, {"main.py": hog},
                                                                                      "hog").id).id, timeout_s=120)
    logs = _logs(orch_client, run.id)
    assert (run.status, run.error) == ("failure", "main.py killed by signal 9 (SIGKILL: e.g. past its memory bound of "
                                                  "2048 MiB)"), logs
    assert "stdout F allocating" in logs and "stdout F survived" not in logs


def test_a_killed_continuous_task_stops_and_its_run_ends_killed(orch_client: WallarooClient) -> None:
    orch = upload(orch_client, {"main.py": HANGING}, "forever")
    task = orch_client.create_task("forever", {}, orch_id=orch.id, continuous=True)
    assert (task.type, task.status) == ("continuous", "started")
    deadline = time.monotonic() + 30
    while not any("stdout F hanging" in line for r in orch_client.list_task_runs(task.id)
                  for line in orch_client.task_run_logs(r.id)):
        assert time.monotonic() < deadline, "the continuous task never started"
        time.sleep(0.2)
    assert orch_client.kill_task(task.id).status == "killed"
    [run] = orch_client.list_task_runs(task.id)
    assert (run.status, run.error) == ("killed", "killed on request")
    time.sleep(2)  # a killed continuous task is not started again
    assert len(orch_client.list_task_runs(task.id)) == 1


def test_a_continuous_task_is_restarted_with_backoff(orch_client: WallarooClient) -> None:
    orch = upload(orch_client, {"main.py": QUICK}, "quick")
    task = orch_client.create_task("again-and-again", {}, orch_id=orch.id, continuous=True)
    runs = sorted(_runs(orch_client, task.id, 3, 60), key=lambda r: r.started_at)[:3]
    orch_client.kill_task(task.id)
    assert [r.status for r in runs] == ["success"] * 3
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in zip(runs, runs[1:], strict=False)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps  # 1 s, then 2 s: each short run doubles the wait
    assert f"stdout F run of task {task.id}" in _logs(orch_client, runs[0].id)


def test_a_cron_task_runs_once_per_tick(orch_client: WallarooClient) -> None:
    orch = upload(orch_client, {"main.py": QUICK}, "cron")
    task = orch_client.create_task("every-2s", {}, orch_id=orch.id, schedule="* * * * * */2")
    runs = _runs(orch_client, task.id, 2, 30)
    orch_client.kill_task(task.id)
    ticks = [r.tick for r in runs]
    assert all(r.status == "success" for r in runs) and len(set(ticks)) == len(ticks)
    assert all(t.second % 2 == 0 for t in ticks)


HOSTILE = r"""
import json, os, sys, urllib.request
args = json.load(open("/home/jovyan/arguments.json"))
tried = {}
def attempt(name, fn):
    try:
        tried[name] = "READ: " + repr(fn())[:200]
    except Exception as e:
        tried[name] = type(e).__name__
data = args["data_dir"]
attempt("list data dir", lambda: os.listdir(data))
attempt("admin token", lambda: open(data + "/admin.token").read())
attempt("metadata db", lambda: open(data + "/runtime.db", "rb").read(16))
attempt("runtime environ", lambda: open(f"/proc/{args['runtime_pid']}/environ", "rb").read())
attempt("model environ", lambda: open(f"/proc/{args['sidekick_pid']}/environ", "rb").read())
attempt("other task key", lambda: open(args["victim_home"] + "/.cache/wallaroo_sdk/auth/keycloak.json").read())
attempt("other task args", lambda: open(args["victim_home"] + "/arguments.json").read())
me = os.getuid()
tried["processes seen"] = sorted({os.stat(f"/proc/{p}").st_uid == me for p in os.listdir("/proc") if p.isdigit()})
key = json.load(open(os.environ["XDG_CACHE_HOME"] + "/wallaroo_sdk/auth/keycloak.json"))["access_token"]
def call(path, body):
    req = urllib.request.Request(os.environ["WALLAROO_URL"] + path, json.dumps(body).encode(),
                                 {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code
tried["own workspace"] = call("/v1/api/orchestration/list", {"workspace_id": 1})
tried["other workspace"] = call("/v1/api/orchestration/list", {"workspace_id": 2})
tried["keys"] = call("/v1/api/keys/list", {})
print("RESULT " + json.dumps(tried))
"""
MODEL_CREDENTIAL = "model-credential-9f3a"
VICTIM = "import os, time\nprint('HOME ' + os.environ['HOME'], flush=True)\ntime.sleep(600)\n"


def _deployed_sidekick_pid(client: WallarooClient, srv: Server, tmp_path: Path) -> int:
    """A deployed model whose sidekick holds a credential in its environment: its pid."""
    mv = client.upload_model("cred", make_model(tmp_path, "cred", DOUBLE), X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("cred-pipe", steps=[mv])
    dep = client.deploy("cred-pipe", pipeline_id=created.pipeline_id,
                        engine_config={"replica_count": 1, "sidekicks": {"cred": {"env": {"MODEL_KEY": MODEL_CREDENTIAL}}}})
    client.wait_for_deployment(f"cred-pipe-{dep}", timeout_s=120)
    raw = httpx.post(f"{srv.url}/v1/api/status/get_deployment", json={"name": f"cred-pipe-{dep}"}, headers=srv.headers,
                     timeout=30).json()
    return raw["sidekicks"][0]["info"]["pid"]


def test_a_hostile_task_sees_no_data_dir_no_other_task_no_model_and_its_key_stays_in_its_workspace(
        orch_client: WallarooClient, orch_server: Server, tmp_path: Path) -> None:
    sidekick_pid = _deployed_sidekick_pid(orch_client, orch_server, tmp_path)
    victim = orch_client.create_task("victim", {"secret": "victim-args"}, orch_id=upload(orch_client, {"main.py": VICTIM},
                                                                                          "victim").id, continuous=True)
    deadline = time.monotonic() + 30
    home = None
    while home is None:
        assert time.monotonic() < deadline, "the victim task never started"
        lines = [line for r in orch_client.list_task_runs(victim.id) for line in _logs(orch_client, r.id)]
        home = next((line.split("HOME ", 1)[1] for line in lines if "stdout F HOME " in line), None)
        time.sleep(0.2)
    try:
        orch = upload(orch_client, {"main.py": HOSTILE}, "hostile")
        info = json.loads((orch_server.data_dir / "runtime.json").read_text())
        args = {"data_dir": str(orch_server.data_dir), "runtime_pid": info["pid"], "victim_home": home,
                "sidekick_pid": sidekick_pid}
        run = orch_client.wait_for_run(orch_client.create_task("hostile", args, orch_id=orch.id).id, timeout_s=60)
        assert run.status == "success", _logs(orch_client, run.id)
        [result] = [json.loads(line.split("RESULT ", 1)[1]) for line in _logs(orch_client, run.id) if "RESULT " in line]
    finally:
        orch_client.kill_task(victim.id)
    for what in ("list data dir", "admin token", "metadata db", "runtime environ", "model environ", "other task key",
                 "other task args"):
        assert result[what] in ("PermissionError", "FileNotFoundError"), (what, result[what])
    assert result["processes seen"] == [True]  # only its own processes, no sidekick's, no runtime's
    assert (result["own workspace"], result["other workspace"], result["keys"]) == (200, 403, 403)
    assert orch_server.token not in json.dumps(result) and MODEL_CREDENTIAL not in json.dumps(result)


def test_a_runs_key_is_revoked_when_it_ends(orch_client: WallarooClient, orch_server: Server) -> None:
    leak = ("import json, os\n"
            "print('KEY', json.load(open(os.environ['XDG_CACHE_HOME'] + '/wallaroo_sdk/auth/keycloak.json'))['access_token'])\n")
    orch = upload(orch_client, {"main.py": leak}, "leak")
    run = orch_client.wait_for_run(orch_client.create_task("leak", {}, orch_id=orch.id).id, timeout_s=60)
    [key] = [line.split("KEY ", 1)[1] for line in _logs(orch_client, run.id) if "KEY " in line]
    answer = httpx.post(f"{orch_server.url}/v1/api/orchestration/list", json={"workspace_id": 1},
                        headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 401 and "revoked" in answer.text


ORPHAN = """
import json, os, time
key = json.load(open(os.environ["XDG_CACHE_HOME"] + "/wallaroo_sdk/auth/keycloak.json"))["access_token"]
print("PID", os.getpid(), "KEY", key, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for its reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_runtime_killed_mid_run_fails_the_run_kills_it_revokes_its_key_and_cron_ticks_fire_once(tmp_path) -> None:
    srv = Server(tmp_path / "data", [], server_env()).start()
    try:
        with srv.client() as client:
            task = client.create_task("interrupted", {}, orch_id=upload(client, {"main.py": ORPHAN}, "orphan").id)
            cron = client.create_task("every-2s", {}, orch_id=upload(client, {"main.py": QUICK}, "quick").id,
                                      schedule="* * * * * */2")
            deadline = time.monotonic() + 30
            while not (found := [line.split() for line in _logs(client, client.list_task_runs(task.id)[0].id)
                                 if " PID " in f" {line}"]):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            pid, key = int(found[0][3]), found[0][5]
            assert _alive(pid)
            before = len(_runs(client, cron.id, 1, 30))
        srv.kill9()
        deadline = time.monotonic() + 10
        while _alive(pid):  # the task dies with the runtime that started it: no orphan keeps working
            assert time.monotonic() < deadline, f"task process {pid} outlived its runtime"
            time.sleep(0.1)
        time.sleep(2)  # ticks pass while it is down
        srv.start()
        with srv.client() as client:
            [run] = client.list_task_runs(task.id)
            assert (run.status, run.error) == ("failure", "interrupted: the runtime stopped during the run")
            answer = httpx.post(f"{srv.url}/v1/api/orchestration/list", json={"workspace_id": 1},
                                headers={"Authorization": f"Bearer {key}"}, timeout=10)
            assert answer.status_code == 401 and "revoked" in answer.text  # its key went with it
            runs = _runs(client, cron.id, before + 2, 60)
            client.kill_task(cron.id)
            ticks = [r.tick for r in client.list_task_runs(cron.id)]
            assert len(ticks) == len(set(ticks)), ticks  # no tick fired twice, across the crash
            assert sum(r.status == "success" for r in runs) >= before + 1
    finally:
        srv.stop()
