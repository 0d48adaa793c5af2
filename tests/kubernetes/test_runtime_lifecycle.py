"""KubernetesRuntime through the real Pulumi engine and the real Kubernetes provider plugin, on a
real API server: up, a no-op preview, updates that roll out, refresh of an out-of-band change,
destroy. Assertions read the objects back from the API server.

The tests of this module run in order on one stack (each phase starts where the last ended).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import ApiError, Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import (
    Namespace,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    Secret,
    Service,
    ServiceAccount,
)
from lightkube.resources.discovery_v1 import EndpointSlice

from tests.kubernetes.k8s_helpers import (
    PROGRAM,
    Target,
    deployments,
    events,
    instance_labels,
    new_namespace,
    pods,
    ready,
    wait_for,
)
from wallaroo_pulumi.cli import build_parser
from wallaroo_pulumi.testing.kube_cluster import KubeCluster
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

ADMIN_TOKEN = "wallaroo-admin-token-for-k8s-tests-0123456789"
SECRETS_KEY = "sealing-key-from-pulumi-config-0123456789"


class Runtime:
    """The stack under test, its namespace and a client on the cluster."""

    def __init__(self, stack: PulumiStack, namespace: str, target: Target, client: Client) -> None:
        self.stack, self.namespace, self.target, self.client = stack, namespace, target, client

    def configure(self, **values: object) -> None:
        for key, value in values.items():
            if value is None:
                self.stack.run("config", "rm", key)
            else:
                self.stack.config_set(key, value if isinstance(value, str) else json.dumps(value))


@pytest.fixture(scope="module")
def runtime(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    target = Target.for_cluster(kube_cluster)
    stack = PulumiStack(tmp_path_factory.mktemp("k8s-runtime") / "project", env=kube_cluster.env(), timeout_s=600)
    stack.write_program(PROGRAM)
    rt = Runtime(stack, new_namespace(), target, kube_cluster.client())
    stack.config_set("admin_token", ADMIN_TOKEN, secret=True)
    stack.config_set("secrets_key", SECRETS_KEY, secret=True)
    rt.configure(image=target.image, namespace=rt.namespace, replicas=2, gpus=target.gpus,
                 **({"node_selector": target.gpu_selector} if target.gpu_selector else {}))
    yield rt
    stack.destroy(check=False)


def test_up_creates_every_object_and_waits_for_ready_pods(runtime: Runtime) -> None:
    result = runtime.stack.up()
    assert runtime.stack.outputs()["url"].startswith("http://rt-svc-")
    created = set(result.ops().values())
    assert created == {"create"}, result.ops()
    client, ns = runtime.client, runtime.namespace

    # both Deployments rolled out: the provider waited for their Pods to be Ready
    by_role = deployments(client, ns)
    assert set(by_role) == {"serve", "scheduler"}
    assert by_role["serve"].status.readyReplicas == 2 and by_role["scheduler"].status.readyReplicas == 1
    running = pods(client, ns)
    assert len(running) == 3 and all(ready(p) for p in running) and all(p.status.podIP for p in running)

    # every pod on one node (D10), a node with the GPUs asked for
    [node_name] = {p.spec.nodeName for p in running}
    node = client.get(Node, node_name)
    if runtime.target.gpus:
        assert int(node.status.allocatable["nvidia.com/gpu"]) >= runtime.target.gpus
        for key, value in runtime.target.gpu_selector.items():
            assert node.metadata.labels[key] == value

    # the pod spec as stored: resources, probes, security, identity, env from the Secret
    account = client.get(ServiceAccount, next(p.spec.serviceAccountName for p in running), namespace=ns)
    assert account.automountServiceAccountToken is False
    for role, dep in by_role.items():
        spec = dep.spec.template.spec
        [c] = spec.containers
        assert c.image == runtime.target.image
        args = build_parser().parse_args(c.args)  # the real CLI accepts what the pod runs
        assert (args.role, args.port, args.data_dir, args.log_retention) == (role, 8080, "/data", 30 * 86400)
        # serving pods place model steps as pods of their own (D35), owned by the runtime's identity
        places = role != "scheduler"
        assert args.sidekick_placement == ("kubernetes" if places else "local")
        if places:
            assert (args.sidekick_image, args.kube_namespace, args.kube_owner) == (
                runtime.target.image, ns, f"ServiceAccount/{account.metadata.name}")
        if role == "serve":
            limits = {"cpu": "2", "memory": "8Gi", **({"nvidia.com/gpu": "1"} if runtime.target.gpus else {})}
            assert c.resources.limits == limits and c.resources.requests == limits
        else:
            assert c.resources.requests == {"cpu": "250m", "memory": "512Mi"}
        for probe in (c.readinessProbe, c.livenessProbe):
            assert (probe.httpGet.path, probe.httpGet.port) == ("/health", "http")
        assert c.securityContext.allowPrivilegeEscalation is False
        assert c.securityContext.capabilities.drop == ["ALL"]
        # a read-only root: /tmp is a size-limited emptyDir (test_real_node runs it so)
        assert c.securityContext.readOnlyRootFilesystem is True
        [tmp] = [v for v in spec.volumes if v.name == "tmp"]
        assert tmp.emptyDir.sizeLimit == "1Gi" and {m.mountPath for m in c.volumeMounts} == {"/data", "/tmp"}
        pod_security = spec.securityContext
        assert (pod_security.runAsNonRoot, pod_security.runAsUser, pod_security.fsGroup) == (True, 10001, 10001)
        assert pod_security.seccompProfile.type == "RuntimeDefault"
        assert spec.serviceAccountName == account.metadata.name and spec.automountServiceAccountToken is places
        [term] = spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution
        assert term.topologyKey == "kubernetes.io/hostname" and term.labelSelector.matchLabels == instance_labels()
        env = {e.name: e.valueFrom.secretKeyRef for e in c.env if e.valueFrom.secretKeyRef is not None}
        assert {(e.key) for e in env.values()} == {"token", "secrets-key"}
        # a pod placing steps (and task Jobs) tells task pods its own address, and nothing else comes from outside
        pod_ip = {e.name: e.valueFrom.fieldRef.fieldPath for e in c.env if e.valueFrom.secretKeyRef is None}
        assert pod_ip == ({"POD_IP": "status.podIP"} if places else {})
        assert ("http://$(POD_IP):8080" in c.args) is places
        secret = client.get(Secret, env["WALLAROO_ADMIN_TOKEN"].name, namespace=ns)
        assert base64.b64decode(secret.data["token"]).decode() == ADMIN_TOKEN
        assert base64.b64decode(secret.data["secrets-key"]).decode() == SECRETS_KEY
    assert by_role["scheduler"].spec.strategy.type == "Recreate" and by_role["scheduler"].spec.replicas == 1

    # the data volume: claimed, bound by the cluster's provisioner, mounted at /data
    [claim] = client.list(PersistentVolumeClaim, namespace=ns, labels=instance_labels())
    claim = wait_for("the data claim bound",
                     lambda: (c := client.get(PersistentVolumeClaim, claim.metadata.name, namespace=ns))
                     .status.phase == "Bound" and c)
    assert claim.spec.accessModes == ["ReadWriteOnce"]
    assert by_role["serve"].spec.template.spec.volumes[0].persistentVolumeClaim.claimName == claim.metadata.name

    # the Service selects only serving pods, and its endpoints are their addresses
    [svc] = client.list(Service, namespace=ns, labels=instance_labels())
    assert svc.spec.selector["wallaroo.ai/role"] == "serve"
    serving_ips = {p.status.podIP for p in pods(client, ns, "serve")}
    wait_for("the Service's endpoints", lambda: {
        a for s in client.list(EndpointSlice, namespace=ns, labels={"kubernetes.io/service-name": svc.metadata.name})
        for e in s.endpoints or [] if e.conditions.ready for a in e.addresses} == serving_ips)

    # RBAC: the runtime's identity may manage step Deployments, Secrets and ServiceAccounts, task Jobs,
    # and watch pods in its namespace, and nothing else, as the API server decides it
    granted = {("apps", "deployments", v) for v in ("get", "list", "create", "patch", "delete")}
    granted |= {("", r, v) for r in ("secrets", "serviceaccounts") for v in ("get", "list", "create", "patch", "delete")}
    granted |= {("", "pods", v) for v in ("list", "watch")}
    granted |= {("batch", "jobs", v) for v in ("get", "list", "create", "delete")}  # task runs (D54)
    refused = {("apps", "deployments", "update"), ("apps", "replicasets", "delete"), ("", "pods", "create"),
               ("", "pods", "delete"), ("", "services", "delete"), ("", "configmaps", "get"),
               ("rbac.authorization.k8s.io", "rolebindings", "create"), ("", "secrets", "update")}
    for group, resource, verb in granted | refused:
        assert can(client, account.metadata.name, ns, verb, resource, group) == ((group, resource, verb) in granted), (
            group, resource, verb)
    assert not can(client, account.metadata.name, ns, "get", "secrets", "", namespace="default")  # its namespace only

    # the state holds neither the token nor the sealing key in plaintext
    state = json.dumps(runtime.stack.export())
    assert ADMIN_TOKEN not in state and SECRETS_KEY not in state
    assert base64.b64encode(ADMIN_TOKEN.encode()).decode() not in state


def test_preview_after_up_changes_nothing(runtime: Runtime) -> None:
    result = runtime.stack.preview()
    assert set(result.change_summary) == {"same"}, result.stdout[-3000:]


def test_new_image_and_autoscale_range_roll_out(runtime: Runtime) -> None:
    client, ns = runtime.client, runtime.namespace
    runtime.configure(image=runtime.target.image_next, replicas=None, autoscale_min=2, autoscale_max=4)
    result = runtime.stack.up()
    ops = result.ops()
    assert [n for n, op in ops.items() if op == "create"] == ["rt-hpa"], ops
    assert not [n for n, op in ops.items() if op in ("replace", "delete", "create-replacement")], ops

    # rolled out: every pod runs the new image and is ready; no pod of the old template is left
    by_role = deployments(client, ns)
    for role, dep in by_role.items():
        assert dep.spec.template.spec.containers[0].image == runtime.target.image_next
        wait_for(f"{role} pods on the new image", lambda r=role: (ps := pods(client, ns, r)) and all(
            ready(p) and p.spec.containers[0].image == runtime.target.image_next for p in ps))
    [hpa] = client.list(HorizontalPodAutoscaler, namespace=ns, labels=instance_labels())
    assert (hpa.spec.minReplicas, hpa.spec.maxReplicas) == (2, 4)
    assert hpa.spec.scaleTargetRef.name == by_role["serve"].metadata.name

    # a new range updates the HPA in place, and the cluster's HPA controller scales the pods to it
    runtime.configure(autoscale_min=3, autoscale_max=6)
    ops = runtime.stack.up().ops()
    assert ops["rt-hpa"] == "update", ops
    hpa = client.get(HorizontalPodAutoscaler, hpa.metadata.name, namespace=ns)
    assert (hpa.spec.minReplicas, hpa.spec.maxReplicas) == (3, 6)
    wait_for("3 ready serving pods (the HPA's new floor)",
             lambda: len([p for p in pods(client, ns, "serve") if ready(p)]) == 3, detail=lambda: events(client, ns))
    assert len({p.spec.nodeName for p in pods(client, ns)}) == 1  # the new pods joined the others' node


def test_refresh_sees_an_out_of_band_change_and_up_restores_it(runtime: Runtime) -> None:
    client, ns = runtime.client, runtime.namespace
    scheduler = deployments(client, ns)["scheduler"]
    # someone stops the cron ticks by hand
    client.patch(Deployment, scheduler.metadata.name, {"spec": {"replicas": 0}}, namespace=ns)
    wait_for("the scheduler pod gone", lambda: not pods(client, ns, "scheduler"))

    refreshed = runtime.stack.refresh()
    assert refreshed.change_summary.get("update") == 1, refreshed.change_summary  # that Deployment alone
    [state] = [r for r in runtime.stack.resources("kubernetes:apps/v1:Deployment")
               if r["urn"].endswith("::rt-scheduler")]
    assert state["outputs"]["spec"]["replicas"] == 0

    preview = runtime.stack.preview()
    assert {n: op for n, op in preview.ops().items() if op != "same"} == {"rt-scheduler": "update"}
    runtime.stack.up()  # the declared state wins: no field-manager conflict (pulumi.com/patchForce)
    assert client.get(Deployment, scheduler.metadata.name, namespace=ns).spec.replicas == 1
    wait_for("the scheduler pod back", lambda: [p for p in pods(client, ns, "scheduler") if ready(p)])


def test_local_placement_leaves_the_runtime_no_role_and_no_token(runtime: Runtime) -> None:
    client, ns = runtime.client, runtime.namespace
    account = client.get(ServiceAccount, pods(client, ns)[0].spec.serviceAccountName, namespace=ns)
    runtime.configure(sidekick_placement="local")
    ops = runtime.stack.up().ops()
    assert {n for n, op in ops.items() if op == "delete"} == {"rt-sidekicks"}, ops  # the Role and its binding
    for dep in deployments(client, ns).values():
        spec = dep.spec.template.spec
        assert spec.automountServiceAccountToken is False
        assert build_parser().parse_args(spec.containers[0].args).sidekick_placement == "local"
    assert not can(client, account.metadata.name, ns, "list", "pods", "")
    runtime.configure(sidekick_placement=None)


def test_destroy_removes_everything(runtime: Runtime) -> None:
    client, ns = runtime.client, runtime.namespace
    [claim] = client.list(PersistentVolumeClaim, namespace=ns, labels=instance_labels())
    volume = claim.spec.volumeName
    runtime.stack.destroy()
    assert runtime.stack.resources() == []
    with pytest.raises(ApiError) as gone:
        client.get(Namespace, ns)
    assert gone.value.status.code == 404
    # the provisioned volume goes with its claim (the default class reclaims on delete)
    wait_for("the data volume deleted", lambda: _absent(client, PersistentVolume, volume))


def can(client: Client, account: str, account_ns: str, verb: str, resource: str, group: str, *,
        namespace: str | None = None) -> bool:
    """Whether the API server lets ServiceAccount ``account`` do ``verb`` on ``resource``."""
    review = client.create(SubjectAccessReview(spec={
        "user": f"system:serviceaccount:{account_ns}:{account}",
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{account_ns}", "system:authenticated"],
        "resourceAttributes": {"namespace": namespace or account_ns, "verb": verb, "resource": resource,
                               "group": group}}))
    return bool(review.status.allowed)


def _absent(client: Client, kind: type, name: str) -> bool:
    try:
        client.get(kind, name)
    except ApiError as exc:
        return exc.status.code == 404
    return False


def test_an_unschedulable_gpu_request_fails_and_the_pod_says_why(kube_cluster: KubeCluster, tmp_path: Path) -> None:
    """More GPUs than any node has: `pulumi up` fails on the Deployment's readiness wait (the
    provider reports the timeout, not the cause); the pending pod carries the scheduler's reason."""
    target = Target.for_cluster(kube_cluster)
    namespace = new_namespace()
    stack = PulumiStack(tmp_path / "project", env=kube_cluster.env())
    stack.write_program(PROGRAM)
    stack.config_set("admin_token", ADMIN_TOKEN, secret=True)
    stack.config_set("secrets_key", SECRETS_KEY, secret=True)
    for key, value in {"image": target.image, "namespace": namespace, "gpus": "64", "ready_timeout": "20s"}.items():
        stack.config_set(key, value)
    try:
        failed = stack.up(check=False)
        errors = " ".join(d.get("message", "") for d in failed.diagnostics if d.get("severity") == "error")
        assert "Deployment::rt-serve" in errors and "timed out waiting to be Ready" in errors, errors
        [pod] = pods(kube_cluster.client(), namespace)
        [scheduled] = [c for c in pod.status.conditions if c.type == "PodScheduled"]
        assert (pod.status.phase, scheduled.status, scheduled.reason) == ("Pending", "False", "Unschedulable")
        assert "Insufficient nvidia.com/gpu" in scheduled.message
    finally:
        stack.destroy(check=False)
