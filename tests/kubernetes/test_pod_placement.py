"""Model steps as pods (issue 14, D35): a real runtime with `--sidekick-placement kubernetes` on the
local control plane. The API server holds each step's Deployment, Secret and ServiceAccount as
asserted here; the scheduler places GPU steps on GPU nodes or says why not; `PodRunner` runs the
pods' containers as local processes (kwok runs none), so inference goes through the pods."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from lightkube import Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import Pod, Secret, ServiceAccount

from tests.kubernetes.k8s_helpers import events, owned_namespace, wait_for
from tests.runtime.conftest import Server, make_model, server_env
from tests.runtime.test_zero_drop import SLOW, Load
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.control_plane import LocalControlPlane
from wallaroo_pulumi.testing.pod_runner import PodRunner

IMAGE = "registry.local/wallaroo-runtime:1"
OWNER = "rt-owner"  # the runtime's identity, owner of its step Deployments (as KubernetesRuntime passes it)
MINE = {"wallaroo.ai/runtime": OWNER, "app.kubernetes.io/component": "sidekick"}
GPU_NODES = {"gpu-a100-0", "gpu-h100-0"}
X = pa.schema([("x", pa.float64())])
Y = pa.schema([("y", pa.float64())])
Z = pa.schema([("z", pa.float64()), ("seen", pa.string())])
DOUBLE = 'return {"y": input_data["x"] * 2.0}'
# the second step reports which credentials it can see: its own, never the first step's
TAG = ('n = len(input_data["y"])\n'
       'seen = os.environ.get("SECRET_A", "-") + "|" + os.environ.get("SECRET_B", "-")\n'
       'return {"z": input_data["y"] + 1.0, "seen": np.array([seen] * n)}')


@pytest.fixture(scope="module")
def namespace(plane: LocalControlPlane) -> Iterator[str]:
    with owned_namespace(plane.client(), OWNER) as name:
        yield name


@pytest.fixture(scope="module")
def runner(plane: LocalControlPlane, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodRunner]:
    with PodRunner(plane, namespace, workdir=tmp_path_factory.mktemp("pods")) as pods:
        yield pods


@pytest.fixture(scope="module")
def runtime(plane: LocalControlPlane, namespace: str, runner: PodRunner,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {**server_env(), **plane.env()}
    srv = Server(tmp_path_factory.mktemp("runtime") / "data",
                 ["--sidekick-placement", "kubernetes", "--sidekick-image", IMAGE, "--kube-namespace", namespace,
                  "--kube-owner", f"ServiceAccount/{OWNER}", "--sidekick-idle", "3s"], env)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def api(runtime: Server) -> Iterator[WallarooClient]:
    with runtime.client(timeout=120) as c:  # per test: a test may restart the runtime (a new port)
        yield c


@pytest.fixture(scope="module")
def models(runtime: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("models")
    with runtime.client(timeout=120) as api:
        return {"double": api.upload_model("double", make_model(root, "double", DOUBLE), X, Y),
                "tag": api.upload_model("tag", make_model(root, "tag", TAG), Y, Z)}


def deploy(api: WallarooClient, name: str, steps: list, config: dict, runtime: Server, client: Client,
           namespace: str) -> str:
    created = api.create_pipeline(name, steps=steps)
    dep = api.deploy(name, pipeline_id=created.pipeline_id, engine_config=config)
    deployment = f"{name}-{dep}"
    try:
        api.wait_for_deployment(deployment, timeout_s=180)
    except Exception as exc:
        raise AssertionError(f"{exc}\n{events(client, namespace)}\n{runtime.log_tail()}") from None
    return deployment


def objects(client: Client, namespace: str, pipeline: str | None = None) -> dict[str, list]:
    labels = {**MINE, **({"wallaroo.ai/pipeline": pipeline} if pipeline else {})}
    return {kind.__name__: [o for o in client.list(kind, namespace=namespace, labels=labels)
                            if not o.metadata.deletionTimestamp]
            for kind in (Deployment, Secret, ServiceAccount, Pod)}


def undeploy_leaves_nothing(api: WallarooClient, name: str, client: Client, namespace: str) -> None:
    api.undeploy(name)
    wait_for(f"every object of {name} gone", lambda: not any(objects(client, namespace, name).values()) or None,
             detail=lambda: str({k: [o.metadata.name for o in v] for k, v in objects(client, namespace, name).items()}))


def allowed(client: Client, namespace: str, account: str, verb: str, resource: str, name: str | None = None) -> bool:
    review = client.create(SubjectAccessReview.from_dict({"spec": {
        "user": f"system:serviceaccount:{namespace}:{account}",
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
        "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource,
                               **({"name": name} if name else {})}}}))
    return bool(review.status.allowed)


def test_two_steps_as_pods_objects_inference_isolation_restart_and_undeploy(
        runtime: Server, api: WallarooClient, models: dict, plane: LocalControlPlane, namespace: str,
        runner: PodRunner) -> None:
    client = plane.client()
    config = {"replica_count": 1, "sidekicks": {
        "double": {"cpus": 0.5, "memory": "256Mi", "env": {"SECRET_A": "alpha-secret"}},
        "tag": {"cpus": 1, "gpus": 1, "accel": "cuda", "env": {"SECRET_B": "beta-secret"}}}}
    name = deploy(api, "two", [models["double"], models["tag"]], config, runtime, client, namespace)

    found = objects(client, namespace, "two")
    deps = {d.metadata.labels["wallaroo.ai/step"]: d for d in found["Deployment"]}
    assert set(deps) == {"double", "tag"} and len(found["Secret"]) == len(found["ServiceAccount"]) == 2
    version = api.get_pipeline("two").version
    for step, dep in deps.items():
        labels = dep.spec.template.metadata.labels
        assert labels["wallaroo.ai/pipeline"] == "two" and labels["wallaroo.ai/step"] == step
        assert labels["wallaroo.ai/pipeline-version"] == version and labels["wallaroo.ai/deployment-id"] == name.split("-")[-1]
        assert [(o.kind, o.name) for o in dep.metadata.ownerReferences] == [("ServiceAccount", OWNER)]
        pod = dep.spec.template.spec
        assert pod.serviceAccountName == dep.metadata.name and pod.automountServiceAccountToken is False
        assert pod.nodeSelector["kubernetes.io/arch"] == "amd64"
        (container,) = pod.containers
        # the step's own Secret, as env only: no other Secret, no volume of one
        assert [s.secretRef.name for s in container.envFrom] == [dep.metadata.name]
        assert not [v for v in pod.volumes if v.secret is not None]
        assert container.readinessProbe.tcpSocket and container.livenessProbe.tcpSocket
        assert container.securityContext.allowPrivilegeEscalation is False and pod.securityContext.runAsNonRoot
        for kind in (Secret, ServiceAccount):  # deleted with their Deployment
            obj = client.get(kind, dep.metadata.name, namespace=namespace)
            assert [(o.kind, o.uid) for o in obj.metadata.ownerReferences] == [("Deployment", dep.metadata.uid)]
        assert client.get(ServiceAccount, dep.metadata.name, namespace=namespace).automountServiceAccountToken is False
    double, tag = deps["double"].spec.template.spec.containers[0], deps["tag"].spec.template.spec.containers[0]
    scratch = str(2**30 + 64 * 2**20)  # the default scratch_size (1Gi, README) plus 64Mi for the container's logs
    assert double.resources.requests == double.resources.limits == {"cpu": "500m", "memory": str(256 * 2**20),
                                                                    "ephemeral-storage": scratch}
    assert tag.resources.limits == {"cpu": "1", "nvidia.com/gpu": "1", "ephemeral-storage": scratch}
    for dep in deps.values():  # the scratch folder is an emptyDir the kubelet holds to the step's scratch_size
        [volume] = [v for v in dep.spec.template.spec.volumes if v.emptyDir is not None]
        assert volume.emptyDir.sizeLimit == str(2**30)
    assert deps["tag"].spec.template.spec.tolerations[0].key == "nvidia.com/gpu"
    secret = client.get(Secret, deps["double"].metadata.name, namespace=namespace)
    assert base64.b64decode(secret.data["SECRET_A"]).decode() == "alpha-secret" and "SECRET_B" not in secret.data

    # the GPU step runs on a GPU node only; the CPU step prefers a node without accelerators
    tag_pods = [p for p in found["Pod"] if p.metadata.labels["wallaroo.ai/step"] == "tag"]
    assert tag_pods and {p.spec.nodeName for p in tag_pods} <= GPU_NODES
    double_pods = [p for p in found["Pod"] if p.metadata.labels["wallaroo.ai/step"] == "double"]
    assert double_pods and {p.spec.nodeName for p in double_pods} <= {"cpu-0", "cpu-1"}

    # a hostile second step: it sees its own credential only, and its identity may read no Secret
    out = api.infer("two", pd.DataFrame({"x": [1.0, 2.5]}))
    assert list(out["out.z"]) == [3.0, 6.0] and set(out["out.seen"]) == {"-|beta-secret"}
    hostile = deps["tag"].metadata.name
    assert not allowed(client, namespace, hostile, "get", "secrets", deps["double"].metadata.name)
    assert not allowed(client, namespace, hostile, "list", "secrets")
    assert not allowed(client, namespace, hostile, "get", "secrets", hostile)
    assert not allowed(client, namespace, hostile, "create", "pods")

    status = api.deployment_status(name)
    pod_names = {p.metadata.name for p in found["Pod"]}
    assert status.status == "Running" and {s.name for s in status.sidekicks} == pod_names
    assert all(s.status == "Running" for s in status.sidekicks)

    # a runtime restart adopts the objects and the pods: nothing is created twice, nothing replaced
    uids = {d.metadata.uid for d in found["Deployment"]}
    runtime.stop()
    assert {d.metadata.uid for d in objects(client, namespace, "two")["Deployment"]} == uids  # left serving
    runtime.start()
    with runtime.client(timeout=120) as fresh:
        fresh.wait_for_deployment(name, timeout_s=120)
        again = objects(client, namespace, "two")
        assert {d.metadata.uid for d in again["Deployment"]} == uids
        assert {p.metadata.name for p in again["Pod"]} == pod_names
        assert list(fresh.infer("two", pd.DataFrame({"x": [4.0]}))["out.z"]) == [9.0]
        undeploy_leaves_nothing(fresh, "two", client, namespace)


def test_a_redeploy_serves_from_the_old_pods_until_the_new_ones_are_linked(
        runtime: Server, api: WallarooClient, models: dict, plane: LocalControlPlane, namespace: str) -> None:
    client = plane.client()
    name = deploy(api, "roll", [models["double"]], {"replica_count": 1}, runtime, client, namespace)
    (old,) = objects(client, namespace, "roll")["Deployment"]
    created = api.create_pipeline("roll", steps=[models["double"]])
    api.deploy("roll", pipeline_id=created.pipeline_id,
               engine_config={"replica_count": 1, "sidekicks": {"double": {"env": {"MODE": "v2"}}}})
    deadline = time.monotonic() + 120
    while api.deployment_status(name).status != "Running" or len(objects(client, namespace, "roll")["Deployment"]) > 1:
        assert list(api.infer("roll", pd.DataFrame({"x": [1.0]}))["out.y"]) == [2.0]  # never a gap
        assert time.monotonic() < deadline, events(client, namespace)
    (new,) = objects(client, namespace, "roll")["Deployment"]
    assert new.metadata.name != old.metadata.name
    secret = client.get(Secret, new.metadata.name, namespace=namespace)
    assert base64.b64decode(secret.data["MODE"]).decode() == "v2"
    undeploy_leaves_nothing(api, "roll", client, namespace)


def test_a_gpu_step_no_node_can_hold_is_pending_with_the_schedulers_reason(
        api: WallarooClient, models: dict, plane: LocalControlPlane, namespace: str) -> None:
    client = plane.client()
    created = api.create_pipeline("huge", steps=[models["double"]])
    dep = api.deploy("huge", pipeline_id=created.pipeline_id,
                     engine_config={"sidekicks": {"double": {"gpus": 16, "accel": "cuda"}}})

    def pending() -> object:
        status = api.deployment_status(f"huge-{dep}")
        reasons = [s.reason for s in status.sidekicks if s.reason and "nvidia.com/gpu" in s.reason]
        return (status, reasons[0]) if reasons else None

    status, reason = wait_for("a Pending sidekick with the scheduler's reason", pending,
                              detail=lambda: events(client, namespace))
    assert status.status == "Starting" and "Unschedulable" in reason and "Insufficient nvidia.com/gpu" in reason
    assert {p.status.phase for p in objects(client, namespace, "huge")["Pod"]} == {"Pending"}
    undeploy_leaves_nothing(api, "huge", client, namespace)


def test_a_killed_sidekick_moves_requests_to_the_other_replica_and_its_pod_is_replaced(
        runtime: Server, api: WallarooClient, models: dict, plane: LocalControlPlane, namespace: str,
        runner: PodRunner) -> None:
    client = plane.client()
    name = deploy(api, "pair", [models["double"]], {"replica_count": 2}, runtime, client, namespace)
    first = {p.metadata.name for p in objects(client, namespace, "pair")["Pod"]}
    assert len(first) == 2
    victim = sorted(first)[0]
    failures: list[BaseException] = []

    def load() -> None:
        for i in range(20):
            try:
                assert list(api.infer("pair", pd.DataFrame({"x": [float(i)]}))["out.y"]) == [2.0 * i]
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                failures.append(exc)

    with runner.held():  # its pod stays Ready a while: requests reach the dead replica and move on
        runner.kill(victim)
        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not failures, failures[:3]
    # the dead replica was seen: by a request that met it and moved on, or at once by its link's
    # reader (D61), after which no request is sent to it
    said = runtime.log_tail(100_000)
    assert "trying another replica" in said or f"pod {victim} of step 'double' lost the connection" in said, said[-3000:]

    def replaced() -> object:
        status = api.deployment_status(name)
        names = {s.name for s in status.sidekicks if s.status == "Running"}
        return names if len(names) == 2 and victim not in names else None

    names = wait_for("the killed pod replaced and linked", replaced, detail=lambda: events(client, namespace))
    assert len(names - first) == 1
    assert list(api.infer("pair", pd.DataFrame({"x": [5.0]}))["out.y"]) == [10.0]
    undeploy_leaves_nothing(api, "pair", client, namespace)


def test_an_idle_step_scales_to_zero_and_the_next_request_wakes_it(
        runtime: Server, api: WallarooClient, models: dict, plane: LocalControlPlane, namespace: str) -> None:
    client = plane.client()
    name = deploy(api, "sleepy", [models["double"]], {"autoscale_min": 0, "autoscale_max": 2}, runtime, client,
                  namespace)
    (dep,) = objects(client, namespace, "sleepy")["Deployment"]
    assert dep.spec.replicas == 1
    wait_for("scaled to zero after 3 s idle", lambda: client.get(Deployment, dep.metadata.name,
                                                                 namespace=namespace).spec.replicas == 0)
    wait_for("no pod left", lambda: not objects(client, namespace, "sleepy")["Pod"])
    runtime.stop()  # a restart adopts the step as it is: at zero
    runtime.start()
    with runtime.client(timeout=180) as fresh:
        fresh.wait_for_deployment(name, timeout_s=120)
        assert client.get(Deployment, dep.metadata.name, namespace=namespace).spec.replicas == 0
        out = fresh.infer("sleepy", pd.DataFrame({"x": [3.0]}))  # waits for a pod, within the load timeout
        assert list(out["out.y"]) == [6.0]
        assert client.get(Deployment, dep.metadata.name, namespace=namespace).spec.replicas == 1
        undeploy_leaves_nothing(fresh, "sleepy", client, namespace)


def test_a_busy_step_gets_another_replica(
        runtime: Server, api: WallarooClient, plane: LocalControlPlane, namespace: str,
        tmp_path: Path) -> None:
    """The runtime's busy-time policy (D12) sets the Deployment's replicas."""
    client = plane.client()
    slow = api.upload_model("slow", make_model(tmp_path, "slow", 'import time; time.sleep(0.2)\n' + DOUBLE), X, Y)
    deploy(api, "busy", [slow], {"autoscale_min": 1, "autoscale_max": 2, "autoscale_cpu_utilization": 50,
                                 "sidekicks": {"slow": {"max_batch_rows": 1}}}, runtime, client, namespace)
    (dep,) = objects(client, namespace, "busy")["Deployment"]
    assert dep.spec.replicas == 1
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            api.infer("busy", pd.DataFrame({"x": [1.0]}))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for("a second replica", lambda: client.get(Deployment, dep.metadata.name,
                                                          namespace=namespace).spec.replicas == 2)
        wait_for("two linked replicas", lambda: len([s for s in api.deployment_status("busy").sidekicks
                                                     if s.status == "Running"]) == 2)
    finally:
        done.set()
        for t in threads:
            t.join(60)
    undeploy_leaves_nothing(api, "busy", client, namespace)


def test_a_restart_after_a_crash_adopts_its_steps_and_deletes_orphans(
        runtime: Server, api: WallarooClient, models: dict, plane: LocalControlPlane, namespace: str) -> None:
    client = plane.client()
    name = deploy(api, "crash", [models["double"]], {"replica_count": 1}, runtime, client, namespace)
    (kept,) = objects(client, namespace, "crash")["Deployment"]
    runtime.kill9()  # no chance to clean up
    # what a runtime killed mid-redeploy leaves: a step Deployment no deployment claims any more
    stray = kept.to_dict()
    labels = {**kept.metadata.labels, "wallaroo.ai/sidekick": "sk-crash-double-0123456789"}
    stray["metadata"] = {"name": "sk-crash-double-0123456789", "labels": labels}
    stray["spec"].update(replicas=0, selector={"matchLabels": {"wallaroo.ai/sidekick": labels["wallaroo.ai/sidekick"]}})
    stray["spec"]["template"]["metadata"]["labels"] = labels
    client.create(Deployment.from_dict(stray), namespace=namespace)
    runtime.start()
    with runtime.client(timeout=120) as fresh:
        fresh.wait_for_deployment(name, timeout_s=120)
        wait_for("the orphan deleted", lambda: [d.metadata.uid for d in objects(client, namespace, "crash")["Deployment"]]
                 == [kept.metadata.uid])
        undeploy_leaves_nothing(fresh, "crash", client, namespace)


def test_redeploys_of_pod_steps_under_load_drop_no_request(
        runtime: Server, api: WallarooClient, plane: LocalControlPlane, namespace: str, tmp_path: Path) -> None:
    """Issue 27's zero drop with steps as pods: clients keep calling while a sidekick's env, the
    model version and a split's weights change (new pods each time); every call is answered 200."""
    client = plane.client()
    v1 = api.upload_model("steady", make_model(tmp_path / "1", "steady", SLOW % "2.0"), X, Y)
    v2 = api.upload_model("steady", make_model(tmp_path / "2", "steady", SLOW % "10.0"), X, Y)
    name = deploy(api, "steady", [v1], {"replica_count": 1, "sidekicks": {"steady": {"env": {"GEN": "a"}}}},
                  runtime, client, namespace)
    url = f"{runtime.url}/v1/api/pipelines/infer/{name}/steady"
    refs = [v.ref().model_dump(exclude_none=True) for v in (v1, v2)]
    changes = [([v1], "bb"), ([v2], "ccc")] + [  # an env, a model version, then a canary's weights moving
        ([{"RandomSplit": {"weights": [{"model": refs[0], "weight": 100 - w}, {"model": refs[1], "weight": w}]}}], "ccc")
        for w in (50, 90)]
    def pods() -> set[str]:
        return {d.metadata.name for d in objects(client, namespace, "steady")["Deployment"]}

    with Load(url, runtime.token) as load:
        time.sleep(1)
        for steps, gen in changes:
            before = pods()
            created = api.create_pipeline("steady", steps=steps)
            api.deploy("steady", pipeline_id=created.pipeline_id, pipeline_version_pk_id=created.pipeline_version_pk_id,
                       engine_config={"replica_count": 1, "sidekicks": {"steady": {"env": {"GEN": gen}}}})
            api.wait_for_deployment(name, timeout_s=180)
            wait_for("the replaced pods gone", lambda: len(pods()) == len(api.deployment_status(name).sidekicks) or None)
            assert not pods() & before  # each change runs on new pods; the old ones drained and went
            time.sleep(1)
    assert set(load.outcomes) == {"ok"}, load.outcomes
    assert load.outcomes["ok"] > 100
    assert {4.0, 5.0, 13.0} <= set(load.answers)  # each generation answered: 2+2, 2+3, 10+3
    undeploy_leaves_nothing(api, "steady", client, namespace)
