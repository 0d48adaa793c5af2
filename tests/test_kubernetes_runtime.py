"""KubernetesRuntime renders the manifests we promise (Pulumi's resource mocks: no cluster here).

The Kubernetes provider plugin is a release binary this offline machine cannot
fetch, so these tests check what our component asks the engine to create.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi
import pytest


class _Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        state.setdefault("metadata", {})
        state["metadata"] = {**state["metadata"], "name": state["metadata"].get("name") or args.name}
        self.resources[f"{args.typ}::{args.name}"] = state
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


@pytest.fixture(autouse=True)
def event_loop_for_mocks() -> Any:
    """Pulumi's mocks need a current event loop; earlier async tests may have closed the default one."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def recorder(event_loop_for_mocks: Any) -> _Recorder:
    rec = _Recorder()
    pulumi.runtime.set_mocks(rec, preview=False)
    return rec


@pulumi.runtime.test
def test_autoscaled_gpu_runtime(recorder: _Recorder) -> Any:
    from wallaroo_pulumi.components.kubernetes_runtime import KubernetesRuntime

    rt = KubernetesRuntime("rt", image="registry.local/wallaroo-runtime:1", admin_token="s3cret",
                           autoscale_min=2, autoscale_max=5, gpus=1, memory="8Gi",
                           node_selector={"gpu": "a100"}, access_mode="ReadWriteMany", log_retention="30d",
                           secrets_key="sealing-key-from-config-0123")

    def check(args: list[Any]) -> None:
        url = args[0]
        res = recorder.resources
        serve = res["kubernetes:apps/v1:Deployment::rt-serve"]["spec"]
        container = serve["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"] == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}
        assert serve["template"]["spec"]["nodeSelector"] == {"gpu": "a100"}
        assert serve.get("replicas") is None  # the HPA owns the count
        hpa = res["kubernetes:autoscaling/v2:HorizontalPodAutoscaler::rt-hpa"]["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
        sched = res["kubernetes:apps/v1:Deployment::rt-scheduler"]["spec"]
        assert sched["replicas"] == 1 and sched["strategy"] == {"type": "Recreate"}
        args = container["args"]
        assert args[:2] == ["runtime", "serve"] and args[args.index("--role") + 1] == "serve"
        sched_container = sched["template"]["spec"]["containers"][0]
        sargs = sched_container["args"]
        assert sargs[sargs.index("--role") + 1] == "scheduler"
        assert sargs[sargs.index("--log-retention") + 1] == "30d"  # the scheduler is the one pruner
        for c in (container, sched_container):  # every pod accepts the one token from the Secret
            env = {e["name"]: e for e in c["env"]}
            assert "secretKeyRef" in env["WALLAROO_ADMIN_TOKEN"]["valueFrom"]
            assert env["WALLAROO_SECRETS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secrets-key"
            assert c["args"][c["args"].index("--data-dir") + 1] == "/data"
        assert serve["template"]["spec"]["securityContext"]["fsGroup"] == 10001
        svc = res["kubernetes:core/v1:Service::rt-svc"]["spec"]
        assert svc["selector"]["wallaroo.ai/role"] == "serve"  # the scheduler pod takes no traffic
        assert res["kubernetes:core/v1:PersistentVolumeClaim::rt-data"]["spec"]["accessModes"] == ["ReadWriteMany"]
        assert url == "http://rt-svc.wallaroo.svc.cluster.local"
        for spec in (serve, sched):  # every pod on the node of the others: SQLite WAL needs one kernel
            [term] = spec["template"]["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert term["topologyKey"] == "kubernetes.io/hostname"
            assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "wallaroo-runtime",
                                                            "app.kubernetes.io/instance": "rt"}

    assert rt.hpa is not None
    return pulumi.Output.all(rt.url, rt.deployment.id, rt.scheduler.id, rt.hpa.id).apply(check)


@pulumi.runtime.test
def test_replicas_share_a_read_write_once_volume_on_one_node(recorder: _Recorder) -> Any:
    from wallaroo_pulumi.components.kubernetes_runtime import KubernetesRuntime

    rt = KubernetesRuntime("rwo", image="i:1", admin_token="s3cret-s3cret-s3cret", replicas=3)
    assert rt.scheduler is not None and rt.hpa is None

    def check(_: Any) -> None:
        res = recorder.resources
        assert res["kubernetes:core/v1:PersistentVolumeClaim::rwo-data"]["spec"]["accessModes"] == ["ReadWriteOnce"]
        serve = res["kubernetes:apps/v1:Deployment::rwo-serve"]["spec"]
        assert serve["replicas"] == 3 and "strategy" not in serve  # rolling: the node can mount it twice
        args = serve["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--role") + 1] == "serve"
        assert "podAffinity" in serve["template"]["spec"]["affinity"]

    return pulumi.Output.all(rt.deployment.id, rt.scheduler.id).apply(check)


@pulumi.runtime.test
def test_single_replica_runs_one_pod_in_role_all(recorder: _Recorder) -> Any:
    """One replica: one Recreate pod serves and schedules, never two at once."""
    from wallaroo_pulumi.components.kubernetes_runtime import KubernetesRuntime

    rt = KubernetesRuntime("one", image="i:1", admin_token="s3cret-s3cret-s3cret")
    assert rt.scheduler is None

    def check(_: Any) -> None:
        res = recorder.resources
        assert "kubernetes:apps/v1:Deployment::one-scheduler" not in res
        spec = res["kubernetes:apps/v1:Deployment::one-serve"]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
        args = spec["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--role") + 1] == "all"
        assert res["kubernetes:core/v1:Service::one-svc"]["spec"]["selector"]["wallaroo.ai/role"] == "all"

    return pulumi.Output.all(rt.deployment.id, rt.url).apply(check)


def test_cli_accepts_the_component_args() -> None:
    """The args the component passes parse with the real CLI parser (and the Dockerfile's CMD too)."""
    import json
    import re
    from pathlib import Path

    from wallaroo_pulumi.cli import build_parser

    for role in ("serve", "scheduler", "all"):
        ns = build_parser().parse_args(["runtime", "serve", "--data-dir", "/data", "--host", "0.0.0.0",
                                        "--port", "8080", "--role", role])
        assert (ns.role, ns.port, ns.data_dir) == (role, 8080, "/data")
    dockerfile = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert build_parser().parse_args(cmd).role == "all"


def test_volume_access_mode_must_fit_the_pods() -> None:
    from wallaroo_pulumi.components.kubernetes_runtime import KubernetesRuntime

    pulumi.runtime.set_mocks(_Recorder(), preview=False)
    with pytest.raises(ValueError, match="'ReadWriteOncePod' lets one pod mount"):
        KubernetesRuntime("rt", image="i", admin_token="t", replicas=3, access_mode="ReadWriteOncePod")
    with pytest.raises(ValueError, match="access_mode must be one of .*got 'ReadOnlyMany'"):
        KubernetesRuntime("rt2", image="i", admin_token="t", access_mode="ReadOnlyMany")
    with pytest.raises(ValueError, match="log_retention: expected a positive duration like 30d"):
        KubernetesRuntime("rt3", image="i", admin_token="t", log_retention="a month")


def test_bad_memory_quantity_is_named() -> None:
    from wallaroo_pulumi.components.kubernetes_runtime import KubernetesRuntime

    pulumi.runtime.set_mocks(_Recorder(), preview=False)
    with pytest.raises(ValueError, match="Kubernetes memory quantity"):
        KubernetesRuntime("rt", image="i", admin_token="t", memory="8GB")
