"""The edge-rollout example, run as users run it (`pulumi up` of its own program through the real
engine): a local centre that publishes to a real registry on loopback, the pipeline, its publish and
two edges; two edge boxes (`runtime edge` processes on the published layer) started with their bundles
serve it; a new model version upgrades the publish and both edges in one `up`, the boxes restart on
the new image with their upgrade bundles and answer with the new version; the centre has every box's
rows, by name; destroy deletes the image tag."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.publish.conftest import EdgeBox, base_image, extract_publish_dir, registry  # noqa: F401 - fixtures
from tests.publish.publish_helpers import wait
from tests.runtime.conftest import server_env
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.runtime.store.oci import ImageRef
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edge-rollout"
EDGES = ("shop-1", "shop-2")


def model_version(tmp: Path, factor: float) -> Path:
    folder = tmp / f"model-{factor:g}"
    shutil.copytree(EXAMPLE / "model", folder)
    source = (folder / "model.py").read_text()
    (folder / "model.py").write_text(source.replace("FACTOR = 2.0", f"FACTOR = {factor}"))
    return folder


def boxes_on(stack: PulumiStack, registry: RegistryServer, tmp: Path, old: dict[str, EdgeBox]) -> dict[str, EdgeBox]:  # noqa: F811
    """Each edge's box on the stack's current image and bundle (the same volume as before, if any)."""
    out = stack.outputs(show_secrets=True)
    publish_dir = extract_publish_dir(registry, out["image"], tmp / f"image-{ImageRef.parse(out['image']).tag}")
    boxes = {}
    for name in EDGES:
        env = {**server_env(), "EDGE_BUNDLE": out[f"{name}_bundle"]}
        box = old.get(name) or EdgeBox(tmp / f"{name}-persist", publish_dir, env, ["--ship-interval", "1s"])
        box.publish_dir, box.env = publish_dir, env
        boxes[name] = box.start()
    return boxes


@pytest.mark.timeout(1500)
def test_the_edge_rollout_example(pulumi_stack: PulumiStack, registry: RegistryServer, base_image: str,  # noqa: F811
                                  tmp_path: Path) -> None:
    stack = pulumi_stack
    stack.write_program((EXAMPLE / "__main__.py").read_text().replace(
        'str(Path(__file__).parent / "model")', 'str(Path("model"))'))
    for key, value in (("data_dir", str(tmp_path / "centre")), ("registry", f"{registry.host}/team"),
                       ("base_image", base_image), ("registry_username", registry.username),
                       ("registry_insecure", "true"), ("edges", ",".join(EDGES)),
                       ("model_path", str(model_version(tmp_path, 2.0)))):
        stack.config_set(key, value)
    stack.config_set("registry_password", registry.password, secret=True)
    planned = stack.preview()
    assert planned.ops("wallaroo:Publish") == {"rollout-release": "create"}
    assert planned.ops("wallaroo:Edge") == {name: "create" for name in EDGES}

    stack.up()
    first = stack.outputs(show_secrets=True)
    assert registry.password not in stack.run("stack", "export").stdout
    boxes: dict[str, EdgeBox] = {}
    try:
        boxes = boxes_on(stack, registry, tmp_path, boxes)
        assert [boxes[n].infer("rollout", [1.0])[0]["out"]["y"] for n in EDGES] == [2.0, 2.0]

        # a version bump: the publish and both edges update in one `up`
        stack.config_set("model_path", str(model_version(tmp_path, 5.0)))
        plan = {k: v for k, v in stack.preview().ops("wallaroo:").items() if v != "same"}
        assert plan.get("rollout-release") == "update" and all(plan.get(n) == "update" for n in EDGES), plan
        stack.up()
        second = stack.outputs(show_secrets=True)
        assert second["image"] != first["image"]
        old = ImageRef.parse(first["image"])
        assert old.tag not in registry.tags(old.repository)  # the replaced publish's tag went
        for box in boxes.values():
            box.stop()
        boxes = boxes_on(stack, registry, tmp_path, boxes)  # the new image, the upgrade bundles, the same volumes
        assert [boxes[n].infer("rollout", [1.0])[0]["out"]["y"] for n in EDGES] == [5.0, 5.0]

        with WallarooClient(second["url"], second["token"]) as centre:
            rows = wait("every box's rows at the centre", lambda: (lambda f: f if len(f) == 4 else None)(
                centre.logs("rollout", limit=100)), on_fail=lambda: boxes["shop-1"].log_tail())
        assert sorted(zip(rows["metadata.partition"], rows["out.y"], strict=True)) == [
            ("shop-1", 2.0), ("shop-1", 5.0), ("shop-2", 2.0), ("shop-2", 5.0)]
    finally:
        for box in boxes.values():
            box.stop()
    stack.destroy()
    ref = ImageRef.parse(second["image"])
    assert ref.tag not in registry.tags(ref.repository)
