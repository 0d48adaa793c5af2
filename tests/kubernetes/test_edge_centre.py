"""The centre as a KubernetesRuntime on the real node (issue 23, D49): the edge-rollout example's own
program, with `centre_image`, run through the real engine. Its runtime pod publishes to a registry
on the node's bridge (where pods reach it), logging in with credentials read from its Secret, and
installs the step's requirements at publish inside that non-root pod; an edge (the published image
under podman, as tests/publish runs it) joins the centre at its `public_url` (a forwarder on
loopback standing in for the LoadBalancer), serves while the centre's Deployment is scaled to zero,
and its rows reach the restarted centre's logs exactly once, tagged with the edge's name. A version
bump upgrades the publish and the edge in one `up`; destroy removes the image tags.

The tests of this module run in order on one stack (each phase starts where the last ended)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest
from lightkube import ApiError, Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Pod, Secret

from tests.kubernetes.k8s_helpers import events, new_namespace, ready, wait_for
from tests.publish.conftest import extract_publish_dir
from tests.publish.test_edge_image import LIMITS, PODMAN, podman
from tests.runtime.conftest import REPO, tiny_wheel
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.components.kubernetes_runtime import APP_PORT
from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.runtime.store.oci import ImageRef
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack
from wallaroo_pulumi.testing.real_node import RealNode
from wallaroo_pulumi.testing.tcp_forward import TcpForward

EXAMPLE = REPO / "examples" / "edge-rollout"
EDGE = "shop-1"
ADMIN_TOKEN = "wallaroo-admin-token-for-the-edge-centre-0123"
EDGE_TOKEN = "edge-box-admin-token-on-the-real-node-0123"
RUNTIME = {"app.kubernetes.io/name": "wallaroo-runtime", "app.kubernetes.io/instance": "centre"}
# the step needs a package no pod could download (pods have no route out): installed at publish from
# the model's own wheels folder, inside the runtime pod
REQUIREMENTS = "--no-index\n--find-links wheels\nedgetinydep==1.0\n"


def model_version(tmp: Path, factor: float) -> Path:
    """The example's model with another factor (a new version), plus a requirement: y = factor * x + 100."""
    folder = tmp / f"model-{factor:g}"
    shutil.copytree(EXAMPLE / "model", folder)
    source = (folder / "model.py").read_text().replace("FACTOR = 2.0", f"FACTOR = {factor}")
    source = source.replace('"y": input_data["x"] * self._model', '"y": input_data["x"] * self._model + edgetinydep.OFFSET')
    (folder / "model.py").write_text("import edgetinydep\n" + source)
    (folder / "requirements.txt").write_text(REQUIREMENTS)
    (folder / "wheels").mkdir()
    (folder / "wheels" / "edgetinydep-1.0-py3-none-any.whl").write_bytes(tiny_wheel("edgetinydep", "1.0", "OFFSET = 100.0\n"))
    return folder


@dataclass
class Centre:
    """The stack under test, the node, the registry the pod publishes to and the centre's public address."""

    stack: PulumiStack
    namespace: str
    node: RealNode
    client: Client
    registry: RegistryServer
    public: TcpForward
    tmp: Path
    found: dict[str, object] = field(default_factory=dict)

    def runtime_pods(self) -> list[Pod]:
        return [p for p in self.client.list(Pod, namespace=self.namespace, labels=RUNTIME) if not p.metadata.deletionTimestamp]

    def address(self) -> tuple[str, int] | None:
        """The ready runtime pod's address: what the load balancer forwards to."""
        return next(((p.status.podIP, APP_PORT) for p in self.runtime_pods() if ready(p)), None)

    def api(self) -> WallarooClient:
        return WallarooClient(self.public.url, ADMIN_TOKEN, timeout=180)

    def scale(self, replicas: int) -> None:
        [dep] = self.client.list(Deployment, namespace=self.namespace, labels=RUNTIME)
        self.client.patch(Deployment, dep.metadata.name, {"spec": {"replicas": replicas}}, namespace=self.namespace)

    def why(self) -> str:
        return (f"{events(self.client, self.namespace)}\n{self.node.pod_logs(self.namespace)}\n"
                f"--- kubelet ---\n{self.node.log(lines=30)}")


@pytest.fixture(scope="module")
def bridge_registry(real_node: RealNode) -> Iterator[RegistryServer]:
    """The distribution registry on the node's bridge address: its pods and this machine both reach it."""
    assert real_node.network is not None
    with RegistryServer(address=real_node.network.gateway) as reg:
        yield reg


@pytest.fixture(scope="module")
def centre(real_node: RealNode, node_image: str, bridge_registry: RegistryServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Centre]:
    reg = bridge_registry
    base = f"{reg.host}/team/wallaroo-pulumi-runtime:test"
    started = time.monotonic()
    podman("push", "--tls-verify=false", "--creds", f"{reg.username}:{reg.password}", "--format", "oci",
           "--compression-format", "zstd", node_image, f"docker://{base}")
    print(f"pushed the runtime image in {time.monotonic() - started:.1f} s")
    tmp = tmp_path_factory.mktemp("edge-centre")
    stack = PulumiStack(tmp / "project", env=real_node.plane.env(), timeout_s=900)
    stack.write_program((EXAMPLE / "__main__.py").read_text())
    namespace = new_namespace()
    box = Centre(stack, namespace, real_node, real_node.plane.client(), reg, TcpForward(lambda: None), tmp)
    box.public = TcpForward(box.address).start()
    for key, value in (("registry", f"{reg.host}/team"), ("base_image", base), ("registry_username", reg.username),
                       ("registry_insecure", "true"), ("edges", EDGE), ("model_path", str(model_version(tmp, 2.0))),
                       ("centre_image", node_image), ("public_url", box.public.url), ("namespace", namespace),
                       ("centre_cpus", "0.5"), ("centre_memory", "1Gi"), ("storage_size", "2Gi"),
                       ("step_cpus", "0.5")):  # the old and the new version's steps side by side on a 2-core node
        stack.config_set(key, value)
    stack.config_set("registry_password", reg.password, secret=True)
    stack.config_set("admin_token", ADMIN_TOKEN, secret=True)
    try:
        yield box
    finally:
        subprocess.run([*PODMAN, "rm", "--force", "--time", "5", *box.found.get("containers", [])], capture_output=True)
        stack.destroy(check=False)
        box.public.stop()


@pytest.mark.timeout(1200)
def test_up_publishes_from_the_runtime_pod_with_credentials_only_in_its_secret(centre: Centre) -> None:
    planned = centre.stack.preview()
    assert planned.ops("wallaroo:Publish") == {"rollout-release": "create"} and planned.ops("wallaroo:Edge") == {EDGE: "create"}
    try:
        centre.stack.up()
    except Exception as exc:
        raise AssertionError(f"{exc}\n{centre.why()}") from None
    out = centre.stack.outputs(show_secrets=True)
    assert out["url"] == centre.public.url
    password = centre.registry.password
    # the login is in the runtime's Secret and nowhere else: not in the state, not in the pod spec
    assert password not in centre.stack.run("stack", "export").stdout
    [dep] = centre.client.list(Deployment, namespace=centre.namespace, labels=RUNTIME)
    assert password not in json.dumps(dep.to_dict(), default=str)
    env = {e.name: e.valueFrom.secretKeyRef.key for e in dep.spec.template.spec.containers[0].env
           if e.valueFrom and e.valueFrom.secretKeyRef}
    assert env["WALLAROO_OCI_PASSWORD"] == "oci-password" and env["WALLAROO_OCI_USERNAME"] == "oci-username"
    secret = centre.client.get(Secret, dep.spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.name,
                               namespace=centre.namespace)
    assert base64.b64decode(secret.data["oci-password"]).decode() == password
    # the pod pushed it: the image and its chart are in the registry, on the runtime image's layers
    ref = ImageRef.parse(out["image"])
    assert ref.registry == centre.registry.host and ref.tag in centre.registry.tags(ref.repository)
    # the step's requirement was installed at publish inside the non-root pod, onto its data volume
    installed = extract_publish_dir(centre.registry, out["image"], centre.tmp / "image-1")
    [sha] = [m["sha"] for m in json.loads((installed / "publish.json").read_text())["models"]]
    assert (installed / "deps" / sha / "edgetinydep" / "__init__.py").read_text() == "OFFSET = 100.0\n"
    [pod] = centre.runtime_pods()
    data = Path(f"/proc/{centre.node.container_pid(pod)}/root/data/publish-work")
    assert [p.name for p in (data / "deps").iterdir() if not p.name.startswith(".")], "no install on the data volume"
    assert not list((data / "scratch").iterdir())  # pip's scratch was there, and is gone
    # the centre serves the pipeline it published (its step in a pod of its own, the wheel installed there)
    with centre.api() as api:
        assert list(api.infer("rollout", pd.DataFrame({"x": [1.0]}))["out.y"]) == [102.0]
    centre.found["first"] = out
    measured = httpx.post(f"{centre.public.url}/v1/api/pipelines/get_publish_image", json={"id": int(ref.tag.rsplit("-", 1)[1])},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30).json()
    print(f"published from the pod in {measured['publish_seconds']:.1f} s (requirement install included): "
          f"{measured['bytes'] / 2**20:.0f} MiB in the registry")


def _edge_serving(url: str) -> bool:
    try:
        health = httpx.get(f"{url}/health", timeout=2).json()
    except (httpx.TransportError, ValueError):
        return False
    return any(s == "running" for s in health["deployments"].values())


def run_edge(centre: Centre, image: str, bundle: str, persist: Path) -> str:
    """The published image under podman with its bundle, as a box would run it; its URL once it serves."""
    reg = centre.registry
    podman("pull", "--tls-verify=false", "--creds", f"{reg.username}:{reg.password}", image)
    persist.mkdir(exist_ok=True)
    os.chown(persist, 10001, 10001)
    port, name = free_port(), f"wallaroo-edge-k8s-{secrets.token_hex(3)}"
    podman("run", "--detach", "--name", name, *LIMITS, "--network", "host", "--cap-drop", "all",
           "--security-opt", "no-new-privileges", "-v", f"{persist}:/persist", "-e", f"EDGE_BUNDLE={bundle}",
           "-e", f"WALLAROO_ADMIN_TOKEN={EDGE_TOKEN}", image,
           "runtime", "edge", "--data-dir", "/persist", "--host", "127.0.0.1", "--port", str(port), "--ship-interval", "1s")
    centre.found.setdefault("containers", []).append(name)  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    wait_for("the edge container to serve", lambda: _edge_serving(url), timeout_s=240,
             detail=lambda: subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True).stderr[-4000:])
    return url


def edge_infer(url: str, xs: list[float]) -> list[dict]:
    answer = httpx.post(f"{url}/infer/rollout", content=json.dumps([{"x": x} for x in xs]), timeout=60,
                        headers={"Authorization": f"Bearer {EDGE_TOKEN}",
                                 "Content-Type": "application/json; format=pandas-records"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def edge_rows(centre: Centre) -> pd.DataFrame:
    with centre.api() as api:
        rows = api.logs("rollout", limit=1000, order="Asc")
    return rows[rows["metadata.partition"] == EDGE] if len(rows) else rows


@pytest.mark.timeout(900)
def test_an_edge_joins_the_kubernetes_centre_serves_while_it_is_down_and_ships_once(centre: Centre) -> None:
    out = centre.found["first"]
    assert isinstance(out, dict)
    url = run_edge(centre, out["image"], out[f"{EDGE}_bundle"], centre.tmp / "persist")
    assert httpx.get(f"{url}/health", timeout=5).json()["edge"]["joined"] is True
    centre.found["edge_url"] = url

    centre.scale(0)  # the centre stopped: its pod gone, the load balancer has no backend
    wait_for("the centre's pod gone", lambda: not centre.runtime_pods(), timeout_s=120, detail=centre.why)
    answer = edge_infer(url, [2.0, 4.0])
    assert [r["out"]["y"] for r in answer] == [104.0, 108.0]
    wait_for("the edge to find the centre unreachable",
             lambda: httpx.get(f"{url}/health", timeout=5).json()["edge"]["centre_reachable"] is False, timeout_s=30)

    centre.scale(1)  # back, on the same data volume
    wait_for("the centre serving again", centre.address, timeout_s=240, detail=centre.why)
    wait_for("the edge's rows at the centre", lambda: len(edge_rows(centre)) == 2, timeout_s=120, detail=centre.why)
    time.sleep(4)  # a few more shipping rounds: nothing arrives twice
    rows = edge_rows(centre)
    assert sorted(rows["out.y"].tolist()) == [104.0, 108.0]
    times = {pd.to_datetime(r["time"], unit="ms", utc=True) for r in answer}
    assert set(pd.to_datetime(rows["time"], utc=True)) == times  # the edge's own timestamps
    assert httpx.get(f"{url}/health", timeout=5).json()["edge"]["shipped_rows"] == 2


@pytest.mark.timeout(1200)
def test_a_version_bump_upgrades_the_publish_and_the_edge_and_destroy_removes_the_tags(centre: Centre) -> None:
    first = centre.found["first"]
    assert isinstance(first, dict)
    centre.stack.config_set("model_path", str(model_version(centre.tmp, 5.0)))
    plan = {k: v for k, v in centre.stack.preview().ops("wallaroo:").items() if v != "same"}
    assert plan.get("rollout-release") == "update" and plan.get(EDGE) == "update", plan
    centre.stack.up()
    second = centre.stack.outputs(show_secrets=True)
    assert second["image"] != first["image"] and second[f"{EDGE}_bundle"] != first[f"{EDGE}_bundle"]
    old = ImageRef.parse(first["image"])
    assert old.tag not in centre.registry.tags(old.repository)  # the replaced publish's tag went
    # the box moves to the new image with its upgrade bundle, on the same volume, and serves the new version
    subprocess.run([*PODMAN, "rm", "--force", "--time", "5", *centre.found.pop("containers")], capture_output=True)
    url = run_edge(centre, second["image"], second[f"{EDGE}_bundle"], centre.tmp / "persist")
    assert [r["out"]["y"] for r in edge_infer(url, [1.0])] == [105.0]
    wait_for("the upgraded edge's row at the centre", lambda: len(edge_rows(centre)) == 3, timeout_s=120)

    client, ns = centre.client, centre.namespace
    centre.stack.destroy()
    new = ImageRef.parse(second["image"])
    assert new.tag not in centre.registry.tags(new.repository)
    with pytest.raises(ApiError) as gone:
        wait_for("the namespace gone", lambda: client.get(Namespace, ns) and None, timeout_s=180)
    assert gone.value.status.code == 404
