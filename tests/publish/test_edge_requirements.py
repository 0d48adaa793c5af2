"""A step's requirements travel installed in the published image: the centre installs them at
publish (from the package index it can reach), the image's layer holds them, and an edge whose pip
has no index at all starts and serves without installing anything (D56)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.publish.conftest import EdgeBox, centre_args, centre_env, extract_publish_dir
from tests.publish.publish_helpers import post, publish, wait
from tests.runtime.conftest import X_SCHEMA, Y_SCHEMA, Server, make_model, tiny_wheel
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer

# y = x * the edge's credential + a constant from a package only the centre's package index has
BODY = 'import edgetinydep\nreturn {"y": input_data["x"] * float(os.environ["EDGE_TEST_CREDENTIAL"]) + edgetinydep.OFFSET}'
NO_INDEX = {"PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}  # an edge's pip reaches no index


def published(tmp: Path, registry: RegistryServer, base_image: str, edge: str) -> tuple[Path, EdgeBox, str]:
    """A one-step pipeline needing `edgetinydep==1.0`, published by a centre whose pip finds it in a
    folder of wheels, and an edge of it; (the image's publish dir, the edge box, the model's sha)."""
    index = tmp / "centre-index"
    index.mkdir()
    (index / "edgetinydep-1.0-py3-none-any.whl").write_bytes(tiny_wheel("edgetinydep", "1.0", "OFFSET = 100.0\n"))
    centre = Server(tmp / "centre", centre_args(registry, base_image),
                    {**centre_env(registry), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index)}).start()
    try:
        zip_path = make_model(tmp, "edge-double-model", BODY, extra={"requirements.txt": "edgetinydep==1.0\n"})
        with centre.client() as client:
            mv = client.upload_model("edge-double-model", zip_path, X_SCHEMA, Y_SCHEMA)
            created = client.create_pipeline("edge-double", steps=[mv])
        done = publish(centre, created.pipeline_version_pk_id, mv.id)
        added = post(centre, "/pipelines/add_edge_to_publish", {"name": edge, "pipeline_publish_id": done["id"]},
                     status=201)
    finally:
        centre.stop()  # the edge serves without it
    publish_dir = extract_publish_dir(registry, done["pipeline_url"], tmp / "image")
    env = {**centre_env(registry), **NO_INDEX, "EDGE_BUNDLE": added["edge_bundles"][edge], "EDGE_TEST_CREDENTIAL": "3"}
    for key in ("WALLAROO_OCI_USERNAME", "WALLAROO_OCI_PASSWORD"):
        env.pop(key)
    sha = json.loads((publish_dir / "publish.json").read_text())["models"][0]["sha"]
    return publish_dir, EdgeBox(tmp / f"{edge}-persist", publish_dir, env), sha


def installed_on_the_edge(box: EdgeBox) -> list[Path]:
    deps = box.data_dir / "deps"
    return sorted(deps.iterdir()) if deps.exists() else []


def test_an_edge_runs_a_step_with_requirements_installing_nothing(tmp_path: Path, registry: RegistryServer,
                                                                  base_image: str) -> None:
    publish_dir, box, sha = published(tmp_path, registry, base_image, "shop-deps")
    installed = publish_dir / "deps" / sha  # in the image's pipeline layer
    assert (installed / "edgetinydep" / "__init__.py").read_text() == "OFFSET = 100.0\n"
    assert (installed / "edgetinydep-1.0.dist-info" / "METADATA").is_file()

    box.start()  # the centre is stopped and pip has no index: only what the image holds can serve
    try:
        assert [a["out"]["y"] for a in box.infer("edge-double", [1.0, 2.0])] == [103.0, 106.0]
        assert installed_on_the_edge(box) == []
    finally:
        box.stop()


def test_an_edge_lacking_a_requirement_names_it_and_installs_nothing(tmp_path: Path, registry: RegistryServer,
                                                                     base_image: str) -> None:
    """The same image with its installed requirements taken out: the step's deploy fails naming the
    requirement, where an edge that reached for a package index would hang or fail on the network."""
    publish_dir, box, _sha = published(tmp_path, registry, base_image, "shop-nodeps")
    for path in sorted((publish_dir / "deps").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    box.proc = box.launch()
    try:
        wait("the edge to refuse the step", lambda: "are neither in this image nor installed into it" in box.log_tail(),
             timeout_s=90, on_fail=box.log_tail)
        assert "requirements ['edgetinydep==1.0'] are neither in this image" in box.log_tail()
        assert installed_on_the_edge(box) == []
    finally:
        box.stop()
