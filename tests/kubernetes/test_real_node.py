"""KubernetesRuntime on a real node (issue 22): a kubelet and containerd on this machine run the
pods the stack declares and the pods the runtime places, so what is asserted here is read from
the node's side (the container process's /proc, its cgroup files, its mounts), not from the
manifest alone.

Which node proves what:
- this real node: the runtime image starts as its securityContext says (uid, read-only root, no
  capabilities, no new privileges, RuntimeDefault seccomp), its probes pass and it serves; sidekick
  pods receive their model over the link and answer; the kernel holds their limits (cpu quota,
  memory, pids, scratch) and OOM-kills a step over its memory, which the runtime reports; a step
  cannot read another step's Secret nor use the API server; nothing is left behind.
- kwok nodes (test_runtime_lifecycle, test_pod_placement): many nodes, GPU and arm nodes, the
  scheduler's reasons, HPA scaling, rollouts, RBAC as the API server decides it.
- PodRunner (test_pod_placement, test_sidekick_link): the link's behaviour under faults a real
  node cannot stage on demand (a dead replica still marked Ready, restarts mid-request).

The tests of this module run in order on one stack (each phase starts where the last ended).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pytest
from lightkube import ApiError, Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Event, Namespace, Pod, Secret

from tests.kubernetes.k8s_helpers import events, new_namespace, wait_for
from tests.runtime.conftest import make_model
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.components.kubernetes_runtime import APP_PORT, RUNTIME_UID
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack
from wallaroo_pulumi.testing.real_node import RealNode

ADMIN_TOKEN = "wallaroo-admin-token-for-the-real-node-0123"
SECRETS_KEY = "sealing-key-for-the-real-node-0123456789"
X = pa.schema([("x", pa.float64())])
Y = pa.schema([("y", pa.float64())])
S = pa.schema([("y", pa.float64()), ("seen", pa.string())])
DOUBLE = 'return {"y": input_data["x"] * 2.0}'
# asks for 1 GiB at once: over a 384Mi step's memory limit
HOG = 'blob = bytearray(2**30)\nfor i in range(0, len(blob), 4096):\n    blob[i] = 1\nreturn {"y": input_data["x"]}'
# a hostile step: what it can see and reach from its pod, reported as its output
SPY = '''import glob, ssl, urllib.error, urllib.request
procs = []
for path in glob.glob("/proc/[0-9]*/cmdline"):
    try:
        procs.append(open(path, "rb").read().replace(b"\\0", b" ").decode())
    except OSError:
        pass
found = {"env": os.environ.get("SECRET_A", "-"), "token": glob.glob("/var/run/secrets/kubernetes.io/*/*"),
         "procs": procs}
url = "https://10.96.0.1/api/v1/namespaces/" + os.environ["NS"] + "/secrets/" + os.environ["TARGET"]
try:
    urllib.request.urlopen(url, context=ssl._create_unverified_context(), timeout=5)
    found["api"] = 200
except urllib.error.HTTPError as exc:
    found["api"] = exc.code
except OSError as exc:
    found["api"] = type(exc).__name__
try:
    open("/usr/lib/spy", "w")
    found["root"] = "writable"
except OSError as exc:
    found["root"] = exc.strerror
n = len(input_data["x"])
return {"y": input_data["x"], "seen": np.array([json.dumps(found)] * n)}'''

# a greedy step: spins on its CPU, starts threads until refused, fills its scratch past its size
GREEDY = '''import threading, time
end = time.monotonic() + 2
while time.monotonic() < end:
    pass
threading.stack_size(64 * 1024)
stop, started = threading.Event(), 0
try:
    for _ in range(4096):
        threading.Thread(target=stop.wait, daemon=True).start()
        started += 1
except RuntimeError:
    pass
stop.set()
with open("/tmp/fill", "wb") as out:
    for _ in range(96):
        out.write(b"x" * 2**20)
n = len(input_data["x"])
return {"y": input_data["x"], "seen": np.array([str(started)] * n)}'''

PROGRAM = """
import pulumi
from wallaroo_pulumi import KubernetesRuntime

cfg = pulumi.Config()
rt = KubernetesRuntime(
    "rt",
    image=cfg.require("image"),
    admin_token=cfg.require_secret("admin_token"),
    secrets_key=cfg.require_secret("secrets_key"),
    namespace=cfg.require("namespace"),
    cpus=0.5,
    memory="1Gi",
    storage_size="1Gi",
    log_retention="1d",
)
pulumi.export("namespace", rt.namespace)
"""


@dataclass
class Stack:
    """The stack under test on the real node, and what the phases hand on."""

    stack: PulumiStack
    namespace: str
    node: RealNode
    client: Client
    found: dict[str, object] = field(default_factory=dict)

    def runtime_pod(self) -> Pod:
        [pod] = [p for p in self.client.list(Pod, namespace=self.namespace,
                                             labels={"app.kubernetes.io/name": "wallaroo-runtime"})
                 if not p.metadata.deletionTimestamp]
        return pod

    def api(self) -> WallarooClient:
        return WallarooClient(f"http://{self.runtime_pod().status.podIP}:{APP_PORT}", ADMIN_TOKEN, timeout=180)

    def step_pods(self, pipeline: str) -> list[Pod]:
        return [p for p in self.client.list(Pod, namespace=self.namespace, labels={"wallaroo.ai/pipeline": pipeline})
                if not p.metadata.deletionTimestamp]

    def why(self) -> str:
        return (f"{events(self.client, self.namespace)}\n{self.node.pod_logs(self.namespace)}\n"
                f"--- kubelet ---\n{self.node.log(lines=30)}")


@pytest.fixture(scope="module")
def rt(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory, node_image: str) -> Iterator[Stack]:
    stack = PulumiStack(tmp_path_factory.mktemp("real-node-stack") / "project", env=real_node.plane.env(),
                        timeout_s=600)
    stack.write_program(PROGRAM)
    namespace = new_namespace()
    stack.config_set("admin_token", ADMIN_TOKEN, secret=True)
    stack.config_set("secrets_key", SECRETS_KEY, secret=True)
    stack.config_set("image", node_image)
    stack.config_set("namespace", namespace)
    yield Stack(stack, namespace, real_node, real_node.plane.client())
    stack.destroy(check=False)


def proc_status(pid: int) -> dict[str, str]:
    """A process's /proc/<pid>/status as the host reads it."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def mount_options(pid: int, target: str) -> set[str]:
    """The options of the mount at `target` in the process's own mount namespace."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == target:
            return set(fields[5].split(","))
    raise AssertionError(f"process {pid}: nothing mounted at {target}")


def cgroup_value(node: RealNode, pid: int, controller: str, knob: str) -> str:
    return (node.cgroup_dir(pid, controller) / knob).read_text().strip()


def assert_confined(node: RealNode, pid: int, *, memory: int, cpu_millis: int) -> None:
    """What the pod specs promise, as the kernel holds it for `pid`: its uid and groups, no
    capabilities, no new privileges, a seccomp filter, a read-only root, and the pod's limits."""
    status = proc_status(pid)
    assert status["Uid"].split() == [str(RUNTIME_UID)] * 4 and status["Gid"].split() == [str(RUNTIME_UID)] * 4
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, (caps, status[caps])
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"  # 2: a filter (RuntimeDefault)
    assert "ro" in mount_options(pid, "/")
    assert int(cgroup_value(node, pid, "memory", "memory.limit_in_bytes")) == memory
    quota, period = (int(cgroup_value(node, pid, "cpu", k)) for k in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
    assert quota * 1000 // period == cpu_millis
    # the pod's cgroup (the container's parent) holds the kubelet's pids limit
    pod_pids = node.cgroup_dir(pid, "pids").parent / "pids.max"
    assert pod_pids.read_text().strip() == str(node.pods_pids_limit)


def test_up_runs_the_runtime_pod_as_its_manifest_says_and_it_serves(rt: Stack) -> None:
    rt.stack.up()  # the provider waited for the Deployment: the pod passed its readiness probe
    pod = rt.runtime_pod()
    assert pod.spec.nodeName == rt.node.name and pod.status.phase == "Running"
    [status] = pod.status.containerStatuses
    assert status.ready and status.restartCount == 0, rt.why()
    pid = rt.node.container_pid(pod)
    assert_confined(rt.node, pid, memory=2**30, cpu_millis=500)
    # fsGroup: the data volume (a fresh root-owned local volume) is the runtime's group's, and written
    groups = proc_status(pid)["Groups"].split()
    assert str(RUNTIME_UID) in groups
    data = Path(f"/proc/{pid}/root/data")
    assert data.stat().st_gid == RUNTIME_UID and any(data.iterdir())
    # it serves, from its pod's address on the node's bridge
    url = f"http://{pod.status.podIP}:{APP_PORT}"
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    # the liveness probe keeps passing: no restart over two of its periods
    time.sleep(45)
    assert rt.runtime_pod().status.containerStatuses[0].restartCount == 0, rt.why()


def test_sidekick_pods_load_their_model_and_answer_through_the_runtime(rt: Stack, tmp_path: Path) -> None:
    with rt.api() as api:
        model = api.upload_model("double", make_model(tmp_path, "double", DOUBLE), X, Y)
        created = api.create_pipeline("two", steps=[model])
        dep = api.deploy("two", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1, "sidekicks": {
            "double": {"cpus": 0.5, "memory": "512Mi", "scratch_size": "64Mi", "env": {"SECRET_A": "alpha-secret"}}}})
        try:
            api.wait_for_deployment(f"two-{dep}", timeout_s=300)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{rt.why()}") from None
        out = api.infer("two", pd.DataFrame({"x": [1.0, 2.5]}))
        assert list(out["out.y"]) == [2.0, 5.0]
    [pod] = rt.step_pods("two")
    assert pod.spec.nodeName == rt.node.name
    pid = rt.node.container_pid(pod)
    assert_confined(rt.node, pid, memory=512 * 2**20, cpu_millis=500)
    # the scratch is the pod's emptyDir, writable; the root stays read-only
    assert "rw" in mount_options(pid, "/tmp")
    rt.found["double"] = pod.metadata.labels["wallaroo.ai/sidekick"]


def test_a_sidekick_killed_with_its_container_is_restarted_and_requests_go_on(rt: Stack) -> None:
    [pod] = rt.step_pods("two")
    os.kill(rt.node.container_pid(pod), signal.SIGKILL)  # its container's first process, from the node

    def restarted() -> object:
        [again] = rt.step_pods("two")
        statuses = again.status.containerStatuses or []
        return again if statuses and statuses[0].restartCount >= 1 and statuses[0].ready else None

    wait_for("the sidekick's container restarted and Ready", restarted, timeout_s=180, detail=rt.why)
    with rt.api() as api:
        # at once: the request that meets the dead link is tried again on the container restarted in place
        assert list(api.infer("two", pd.DataFrame({"x": [3.0]}))["out.y"]) == [6.0]


def test_a_step_over_its_memory_is_oom_killed_by_the_kernel_and_reported(rt: Stack, tmp_path: Path) -> None:
    with rt.api() as api:
        model = api.upload_model("hog", make_model(tmp_path, "hog", HOG), X, Y)
        created = api.create_pipeline("hog", steps=[model])
        dep = api.deploy("hog", pipeline_id=created.pipeline_id,
                         engine_config={"sidekicks": {"hog": {"cpus": 0.25, "memory": "384Mi"}}})
        api.wait_for_deployment(f"hog-{dep}", timeout_s=300)
        with pytest.raises(Exception):  # noqa: B017 - whichever error the link gives, checked below
            api.infer("hog", pd.DataFrame({"x": [1.0]}))

        def oom_reported() -> str | None:
            reasons = [s.reason or "" for s in api.deployment_status(f"hog-{dep}").sidekicks]
            return next((r for r in reasons if "OOMKilled" in r), None)

        reason = wait_for("the OOM kill in the deployment's status", oom_reported, timeout_s=120, detail=rt.why)
        assert "memory" in reason.lower()
    [pod] = rt.step_pods("hog")
    terminated = pod.status.containerStatuses[0].lastState.terminated
    assert terminated is not None and terminated.reason == "OOMKilled"
    with rt.api() as api:
        api.undeploy("hog")


def test_a_greedy_steps_cpu_threads_and_scratch_are_held_by_the_node(rt: Stack, tmp_path: Path) -> None:
    """Issue 28 on a node: the pod's CPU quota throttles it, its pids limit stops its threads, and a
    scratch filled past its size gets the pod evicted by the kubelet, which the runtime reports."""
    with rt.api() as api:
        model = api.upload_model("greedy", make_model(tmp_path, "greedy", GREEDY), X, S)
        created = api.create_pipeline("greedy", steps=[model])
        dep = api.deploy("greedy", pipeline_id=created.pipeline_id, engine_config={"sidekicks": {"greedy": {
            "cpus": 0.25, "memory": "384Mi", "scratch_size": "64Mi"}}})
        api.wait_for_deployment(f"greedy-{dep}", timeout_s=300)
        [pod] = rt.step_pods("greedy")
        pid = rt.node.container_pid(pod)
        before = _throttled(rt.node, pid)
        out = api.infer("greedy", pd.DataFrame({"x": [1.0]}))
        assert _throttled(rt.node, pid) > before  # 2 s of spinning on a quarter of a CPU
        started = int(out["out.seen"][0])
        assert 0 < started < rt.node.pods_pids_limit  # the pod's pids limit, its other tasks included

        def evicted() -> list[Event] | None:  # the kubelet's word, as the API server holds it
            return [e for e in rt.client.list(Event, namespace=rt.namespace, fields={
                "involvedObject.name": pod.metadata.name}) if e.reason == "Evicted"] or None

        [event] = wait_for("the pod evicted for its scratch", evicted, timeout_s=120, detail=rt.why)
        assert 'EmptyDir volume "scratch" exceeds the limit' in event.message, event.message
        # the runtime tells that replica ended (not Running) and why, and serves from the one replacing
        # it; its link's reader sees the link drop at once (D61), so the replica may first show the
        # lost link until the pod's own status names its node's reason
        status = wait_for("the ended pod in the deployment's status, with its node's reason", lambda: (
            st := api.deployment_status(f"greedy-{dep}")) and any(
                s.name == pod.metadata.name and s.status == "Error" and "stopped by its node" in (s.reason or "")
                for s in st.sidekicks) and st, timeout_s=60)
        [ended] = [s for s in status.sidekicks if s.name == pod.metadata.name]
        assert "stopped by its node" in ended.reason and "64Mi" in ended.reason, ended.reason
        api.wait_for_deployment(f"greedy-{dep}", timeout_s=300)
        api.undeploy("greedy")


def _throttled(node: RealNode, pid: int) -> int:
    stat = dict(line.split() for line in (node.cgroup_dir(pid, "cpu") / "cpu.stat").read_text().splitlines())
    return int(stat["nr_throttled"])


def test_a_hostile_step_cannot_read_another_steps_secret_nor_use_the_api_server(rt: Stack, tmp_path: Path) -> None:
    target = rt.found["double"]
    with rt.api() as api:
        model = api.upload_model("spy", make_model(tmp_path, "spy", SPY), X, S)
        created = api.create_pipeline("spy", steps=[model])
        dep = api.deploy("spy", pipeline_id=created.pipeline_id, engine_config={"sidekicks": {"spy": {
            "cpus": 0.25, "memory": "384Mi", "env": {"NS": rt.namespace, "TARGET": str(target)}}}})
        api.wait_for_deployment(f"spy-{dep}", timeout_s=300)
        out = api.infer("spy", pd.DataFrame({"x": [1.0]}))
    seen = json.loads(out["out.seen"][0])
    assert seen["env"] == "-"  # the other step's credential is not in its env
    assert seen["token"] == []  # no ServiceAccount token mounted
    assert seen["api"] == 401  # the API server, reached, answers a request without a token: unauthorized
    assert seen["root"] == "Read-only file system"
    # its own pid namespace: its pod's processes only, neither the runtime nor another step
    assert seen["procs"] and not [c for c in seen["procs"] if "runtime serve" in c or "--name double" in c], seen["procs"]
    secret = rt.client.get(Secret, str(target), namespace=rt.namespace)
    assert base64.b64decode(secret.data["SECRET_A"]).decode() == "alpha-secret"  # it exists: only unreachable
    with rt.api() as api:
        api.undeploy("spy")


def test_undeploy_and_destroy_leave_no_pod_secret_cgroup_or_interface(rt: Stack) -> None:
    client, ns = rt.client, rt.namespace
    with rt.api() as api:
        api.undeploy("two")
    wait_for("the steps' pods, Deployments and Secrets gone", lambda: not rt.step_pods("two") and not [
        o for kind in (Deployment, Secret) for o in client.list(kind, namespace=ns, labels={"wallaroo.ai/pipeline": "two"})],
        detail=rt.why)
    rt.stack.destroy()
    with pytest.raises(ApiError) as gone:
        wait_for("the namespace gone", lambda: client.get(Namespace, ns) and None, timeout_s=120)
    assert gone.value.status.code == 404
    wait_for("no pod cgroup, container or bridge port left on the node",
             lambda: not rt.node.pod_cgroups() and not rt.node.containers() and not rt.node.network.ports(),
             timeout_s=120, detail=lambda: f"{rt.node.pod_cgroups()} {rt.node.containers()} {rt.node.network.ports()}")
    assert rt.node.network.namespaces() == []
