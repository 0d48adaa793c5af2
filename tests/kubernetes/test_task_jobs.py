"""Task runs as Jobs (issue 24, D54): a real runtime with `--sidekick-placement kubernetes` on the
local control plane runs each run of a user orchestration as a Job of its own. The API server holds
the Job (one pod, never restarted, bounded and confined as a sidekick pod is) and the Secret with
the run's key and arguments, mounted into that pod alone; `PodRunner` runs the pod's container
(the start script, then main.py with the real Wallaroo SDK) as a local process and serves its log
to `pods/log`, as a kubelet does; the run's status comes from the Job, its log from the pod, and a
timeout deletes the Job (its process with it)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Secret

from tests.kubernetes.k8s_helpers import as_dict, owned_namespace, task_pods, wait_for
from tests.orchestrations.conftest import tiny_wheel, upload
from tests.runtime.conftest import Server, server_env
from tests.wire.conftest import sdk_python  # noqa: F401 - the fixture: the pinned SDK's python
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.control_plane import LocalControlPlane
from wallaroo_pulumi.testing.pod_runner import PodRunner

IMAGE = "registry.local/wallaroo-runtime:1"
TASK_IMAGE = "registry.local/wallaroo-task:1"
OWNER = "rt-tasks"
TASKS = {"wallaroo.ai/runtime": OWNER, "app.kubernetes.io/component": "task"}
# waits for the test's go (a file in its scratch) so that its objects can be read while it runs
SDK_TASK = """
import json, os, sys, time
import wallaroo

while not os.path.exists(os.path.join(os.environ["HOME"], "go")):
    time.sleep(0.1)
wl = wallaroo.Client()                              # the run's key, from the Secret, found by the SDK
args = json.load(open(os.environ["WALLAROO_TASK_ARGS"]))   # task_args() reads it at /home/jovyan in the pod
print("in task:", wl.in_task(), "day:", args["day"])
print("orchestrations:", sorted(o.name() for o in wl.list_orchestrations(workspace_id=1)))
print("a warning", file=sys.stderr)
"""
FAILING = "import sys\nprint('working', flush=True)\nsys.exit(3)\n"
HANGING = "import time\nprint('hanging', flush=True)\ntime.sleep(600)\n"


@pytest.fixture(scope="module")
def namespace(plane: LocalControlPlane) -> Iterator[str]:
    with owned_namespace(plane.client(), OWNER) as name:
        yield name


@pytest.fixture(scope="module")
def runner(plane: LocalControlPlane, namespace: str, sdk_python: str,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodRunner]:
    with task_pods(plane, namespace, tmp_path_factory.mktemp("task-pods"), python=sdk_python) as pods:
        yield pods


@pytest.fixture(scope="module")
def runtime(plane: LocalControlPlane, namespace: str, runner: PodRunner,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("runtime") / "data",
                 ["--sidekick-placement", "kubernetes", "--sidekick-image", IMAGE, "--kube-namespace", namespace,
                  "--kube-owner", f"ServiceAccount/{OWNER}", "--task-image", TASK_IMAGE],
                 {**server_env(), **plane.env()})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(runtime: Server) -> Iterator[WallarooClient]:
    with runtime.client(timeout=120) as c:
        yield c


def _lines(api: WallarooClient, run_id: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in api.task_run_logs(run_id)]


def _left(plane: LocalControlPlane, namespace: str) -> list[str]:
    client = plane.client()
    return [f"{kind.__name__}/{o.metadata.name}" for kind in (Job, Secret)
            for o in client.list(kind, namespace=namespace, labels=TASKS) if not o.metadata.deletionTimestamp]


def test_a_task_run_is_a_job_with_its_key_in_a_secret_of_its_pod_alone(
        runtime: Server, api: WallarooClient, plane: LocalControlPlane, namespace: str, runner: PodRunner) -> None:
    client = plane.client()
    orch = upload(api, {"main.py": SDK_TASK}, "in-a-pod")
    task = api.create_task("pod-task", {"day": "monday"}, orch_id=orch.id, timeout_s=300)
    [job] = wait_for("the run's Job", lambda: list(client.list(Job, namespace=namespace, labels=TASKS)))
    name = job.metadata.name
    spec = as_dict(job)["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 330)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    [container] = pod["containers"]
    assert container["image"] == TASK_IMAGE
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True}
    assert container["resources"]["limits"] == container["resources"]["requests"] == {
        "cpu": "1", "memory": str(2 * 2**30)}
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in pod["volumes"]} == {"scratch": None, "run": name}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WALLAROO_TASK_ID"] == task.id and "token" not in json.dumps(env).lower()  # the key is not in the spec
    secret = client.get(Secret, name, namespace=namespace)
    key = json.loads(base64.b64decode(secret.data["keycloak.json"]))["access_token"]
    assert json.loads(base64.b64decode(secret.data["arguments.json"])) == {"day": "monday"}
    assert secret.metadata.labels["wallaroo.ai/task-run"] == job.metadata.labels["wallaroo.ai/task-run"]

    [pod_name] = runner.wait_started(1)
    (runner.workdir / pod_name / "scratch" / "go").write_text("")
    run = api.wait_for_run(task.id, timeout_s=180)
    lines = _lines(api, run.id)
    assert run.status == "success", (lines, runner.log(pod_name))
    assert "stdout F in task: True day: monday" in lines  # the pod's log, through pods/log
    assert "stdout F orchestrations: ['in-a-pod', 'llm-listener']" in lines  # the SDK talked back with the run's key
    assert "stdout F a warning" in lines  # the log API merges stderr into the one stream
    assert runner.ended[pod_name] == 0
    wait_for("the run's Job and Secret deleted", lambda: not _left(plane, namespace) or None,
             detail=lambda: str(_left(plane, namespace)))
    revoked = httpx.post(f"{runtime.url}/v1/api/orchestration/list", json={"workspace_id": 1},
                         headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert revoked.status_code == 401, revoked.text


def test_a_failing_run_fails_with_its_exit_status_from_the_pod(api: WallarooClient, plane: LocalControlPlane,
                                                               namespace: str) -> None:
    orch = upload(api, {"main.py": FAILING}, "fails-in-a-pod")
    run = api.wait_for_run(api.create_task("pod-fails", {}, orch_id=orch.id).id, timeout_s=180)
    assert (run.status, run.error) == ("failure", "main.py exited with status 3")
    assert "stdout F working" in _lines(api, run.id)
    wait_for("the run's Job and Secret deleted", lambda: not _left(plane, namespace) or None)


def test_a_pod_runs_on_the_requirements_installed_at_packaging_without_an_index(
        api: WallarooClient, plane: LocalControlPlane, namespace: str) -> None:
    """D60: the pod fetches the folders packaging installed, and runs no pip."""
    wheel_name, wheel = tiny_wheel(value="from packaging")
    orch = upload(api, {"main.py": "import tinydep\nprint('tinydep says', tinydep.VALUE)\n",
                        "requirements.txt": "--no-index\n--find-links wheels\ntinydep==1.0\n",
                        f"wheels/{wheel_name}": wheel}, "deps-in-a-pod")
    run = api.wait_for_run(api.create_task("pod-deps", {}, orch_id=orch.id).id, timeout_s=180)
    lines = _lines(api, run.id)
    assert run.status == "success", lines
    assert "stdout F [runtime] requirements: the 1 folder(s) installed at packaging" in lines
    assert not any("installing requirements.txt" in line for line in lines), lines
    assert "stdout F tinydep says from packaging" in lines
    wait_for("the run's Job and Secret deleted", lambda: not _left(plane, namespace) or None)


def test_a_run_past_its_timeout_has_its_job_deleted_and_its_process_killed(
        api: WallarooClient, plane: LocalControlPlane, namespace: str, runner: PodRunner) -> None:
    orch = upload(api, {"main.py": HANGING}, "hangs-in-a-pod")
    started = time.monotonic()
    run = api.wait_for_run(api.create_task("pod-hangs", {}, orch_id=orch.id, timeout_s=8).id, timeout_s=180)
    assert run.status == "timed_out" and time.monotonic() - started < 120
    assert "stdout F hanging" in _lines(api, run.id)
    wait_for("the run's Job and Secret deleted", lambda: not _left(plane, namespace) or None)
    wait_for("the pod's process killed", lambda: all(p.poll() is not None for p in runner.procs.values()) or None)


def test_an_orchestration_too_large_for_a_secret_fails_its_run_saying_so(
        api: WallarooClient, plane: LocalControlPlane, namespace: str) -> None:
    orch = upload(api, {"main.py": "print('never')\n", "weights.bin": os.urandom(800 * 1024)}, "too-large")
    run = api.wait_for_run(api.create_task("pod-too-large", {}, orch_id=orch.id).id, timeout_s=120)
    assert run.status == "failure" and "a task pod takes at most 716800 bytes" in run.error, run.error
    assert not _left(plane, namespace)


def test_a_killed_task_s_job_is_deleted(api: WallarooClient, plane: LocalControlPlane, namespace: str,
                                        runner: PodRunner) -> None:
    orch = upload(api, {"main.py": HANGING}, "killed-in-a-pod")
    task = api.create_task("pod-killed", {}, orch_id=orch.id, continuous=True)
    wait_for("the run's pod process", lambda: any("hanging" in runner.log(p) for p in runner.procs) or None)
    assert api.kill_task(task.id).status == "killed"
    [run] = api.list_task_runs(task.id)
    assert (run.status, run.error) == ("killed", "killed on request")
    wait_for("the run's Job and Secret deleted", lambda: not _left(plane, namespace) or None)
    wait_for("the pod's process killed", lambda: all(p.poll() is not None for p in runner.procs.values()) or None)


def test_a_runtime_killed_mid_run_deletes_the_run_s_job_when_it_starts_again(
        runtime: Server, api: WallarooClient, plane: LocalControlPlane, namespace: str, runner: PodRunner) -> None:
    """Last here: it restarts the module's runtime. The pod outlives the runtime (it is the cluster's);
    the restarted runtime fails the run, deletes its Job and Secret, and the key is revoked."""
    client = plane.client()
    orch = upload(api, {"main.py": HANGING}, "orphaned-in-a-pod")
    task = api.create_task("pod-orphaned", {}, orch_id=orch.id, timeout_s=300)
    [job] = wait_for("the run's Job", lambda: list(client.list(Job, namespace=namespace, labels=TASKS)))
    wait_for("the run's pod process", lambda: any("hanging" in runner.log(p) for p in runner.procs) or None)
    secret = client.get(Secret, job.metadata.name, namespace=namespace)
    key = json.loads(base64.b64decode(secret.data["keycloak.json"]))["access_token"]
    runtime.kill9()
    time.sleep(1)
    assert _left(plane, namespace)  # nothing deleted them while the runtime was down
    runtime.start()
    with runtime.client() as restarted:
        [run] = restarted.list_task_runs(task.id)
        assert (run.status, run.error) == ("failure", "interrupted: the runtime stopped during the run")
    wait_for("the orphaned Job and Secret deleted", lambda: not _left(plane, namespace) or None)
    wait_for("the pod's process killed", lambda: all(p.poll() is not None for p in runner.procs.values()) or None)
    answer = httpx.post(f"{runtime.url}/v1/api/orchestration/list", json={"workspace_id": 1},
                        headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 401 and "revoked" in answer.text
