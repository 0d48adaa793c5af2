"""The built-in llm-listener's runs as Jobs (D58): with `--sidekick-placement kubernetes` a run of a
built-in listener model is a Job of its own, as a user task's run is (D54): its Secret holds the run's key
and a two-line main.py with the run's spec, its pod's memory limit is the run's bound (`max_memory_mb` +
1024 MiB), and its scores, counts and window land where an in-process run's did. `PodRunner` runs the
pod's container as a local process with this interpreter (the runtime image's Python, which has the
scorers) and serves its log to `pods/log`, as a kubelet does."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator

import pytest
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Secret

from tests.kubernetes.k8s_helpers import as_dict, owned_namespace, task_pods, wait_for
from tests.listeners.listener_helpers import BAD, GOOD, llm_rows, now_ms
from tests.runtime.conftest import Server, server_env
from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.testing.control_plane import LocalControlPlane
from wallaroo_pulumi.testing.pod_runner import PodRunner

IMAGE = "registry.local/wallaroo-runtime:1"
TASK_IMAGE = "registry.local/wallaroo-task:1"  # users' tasks' image (the SDK's): not the built-in's
OWNER = "rt-listener-jobs"
TASKS = {"wallaroo.ai/runtime": OWNER, "app.kubernetes.io/component": "task"}


@pytest.fixture(scope="module")
def namespace(plane: LocalControlPlane) -> Iterator[str]:
    with owned_namespace(plane.client(), OWNER) as name:
        yield name


@pytest.fixture(scope="module")
def runner(plane: LocalControlPlane, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodRunner]:
    with task_pods(plane, namespace, tmp_path_factory.mktemp("listener-pods")) as pods:
        yield pods


@pytest.fixture(scope="module")
def runtime(plane: LocalControlPlane, namespace: str, runner: PodRunner,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("listener-runtime") / "data"
    store = LogStore(data / "logs")
    store.append("llm", llm_rows((GOOD + BAD) * 4, now_ms() - 60_000))
    store.close()
    srv = Server(data, ["--sidekick-placement", "kubernetes", "--sidekick-image", IMAGE, "--kube-namespace", namespace,
                        "--kube-owner", f"ServiceAccount/{OWNER}", "--task-image", TASK_IMAGE],
                 {**server_env(), **plane.env()})
    srv.start()
    yield srv
    srv.stop()


def test_a_builtin_listener_run_is_a_job_of_its_own(runtime: Server, plane: LocalControlPlane, namespace: str,
                                                     runner: PodRunner) -> None:
    client = plane.client()
    with runtime.client(timeout=120) as api:
        task = api.create_task("score", {"monitored_pipeline": "llm", "listener_model": {"name": "combined"},
                                         "batch_size": 4, "max_memory_mb": 256}, timeout_s=300)
        [job] = wait_for("the run's Job", lambda: list(client.list(Job, namespace=namespace, labels=TASKS)))
        [container] = as_dict(job)["spec"]["template"]["spec"]["containers"]
        assert container["image"] == IMAGE  # the sidekick image (our package, the scorers), not the users' task image
        assert container["resources"]["limits"]["memory"] == str((256 + 1024) * 2**20)
        secret = client.get(Secret, job.metadata.name, namespace=namespace)
        with zipfile.ZipFile(io.BytesIO(base64.b64decode(secret.data["orchestration.zip"]))) as zf:
            assert sorted(zf.namelist()) == ["listener-run.json", "main.py"]
            assert json.loads(zf.read("listener-run.json"))["model"]["name"] == "combined"
        run = api.wait_for_run(task.id, timeout_s=240)
        lines = [line.split(" ", 1)[1] for line in api.task_run_logs(run.id)]
        assert run.status == "success", (lines, runner.log(runner.wait_started(1)[0]))
        assert any(line.startswith("stdout F done: read 20, scored 20") for line in lines), lines
        assert any("in Job " in line for line in lines), lines
        shown = api.list_task_runs(task.id)[0]
        assert (shown.rows_read, shown.rows_scored, shown.window_start is not None) == (20, 20, True)
    wait_for("the run's Job and Secret deleted",
             lambda: not [o for kind in (Job, Secret) for o in client.list(kind, namespace=namespace, labels=TASKS)
                          if not o.metadata.deletionTimestamp] or None)
