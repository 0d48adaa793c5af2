"""Pipeline versions, undeploy / delete, model delete conflicts, redeploy with a new version."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, make_model, tiny_wheel
from wallaroo_pulumi.client import ConflictError, ModelRef, NotFoundError, ValidationError


def test_versions_undeploy_redeploy_delete(client, models_dir):
    v1 = client.upload_model("lifecycle", make_model(models_dir / "l1", "lifecycle", DOUBLE), X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("lifecycle-pipe", steps=[ModelRef(v1.name, v1.version, v1.sha)])
    same = client.create_pipeline("lifecycle-pipe", steps=[v1])
    assert (same.pipeline_id, same.pipeline_version_pk_id, same.version) == (
        created.pipeline_id, created.pipeline_version_pk_id, created.version)
    dep = client.deploy("lifecycle-pipe", pipeline_id=created.pipeline_id)
    client.wait_for_deployment(f"lifecycle-pipe-{dep}", timeout_s=60)
    assert client.infer("lifecycle-pipe", pd.DataFrame({"x": [1.0]}))["out.y"].tolist() == [2.0]

    with pytest.raises(ConflictError) as err:
        client.delete_model(v1.name)
    assert "lifecycle-pipe" in str(err.value)

    # a new model version -> a new pipeline version; redeploy keeps the deployment id
    v2 = client.upload_model("lifecycle", make_model(models_dir / "l2", "lifecycle", 'return {"y": input_data["x"] * 10.0}'),
                             X_SCHEMA, Y_SCHEMA)
    changed = client.create_pipeline("lifecycle-pipe", steps=[v2])
    assert changed.pipeline_id == created.pipeline_id and changed.version != created.version
    dep2 = client.deploy("lifecycle-pipe", pipeline_id=changed.pipeline_id,
                         pipeline_version_pk_id=changed.pipeline_version_pk_id)
    assert dep2 == dep
    client.wait_for_deployment(f"lifecycle-pipe-{dep}", timeout_s=60)
    out = client.infer("lifecycle-pipe", pd.DataFrame({"x": [1.0]}))
    assert out["out.y"].tolist() == [10.0] and out["metadata.pipeline_version"][0] == changed.version
    p = client.get_pipeline(created.pipeline_id)
    assert p.version == changed.version and p.steps[0]["version"] == v2.version

    client.undeploy(created.pipeline_id, dep)
    p = client.get_pipeline("lifecycle-pipe")
    assert not p.deployed and p.status == "undeployed"
    with pytest.raises(NotFoundError) as err:
        client.infer("lifecycle-pipe", pd.DataFrame({"x": [1.0]}))
    assert "not deployed" in str(err.value)
    with pytest.raises(NotFoundError):
        client.deployment_status(f"lifecycle-pipe-{dep}")

    # delete undeploys first, and frees the model for deletion
    dep = client.deploy("lifecycle-pipe", pipeline_id=created.pipeline_id)
    client.wait_for_deployment(f"lifecycle-pipe-{dep}", timeout_s=60)
    client.delete_pipeline(created.pipeline_id)
    with pytest.raises(NotFoundError):
        client.get_pipeline("lifecycle-pipe")
    client.delete_model(v1.name)
    with pytest.raises(NotFoundError):
        client.list_model_versions("lifecycle")
    with pytest.raises(NotFoundError):
        client.get_model_version(v2.id)
    # its logs stay readable
    assert len(client.logs("lifecycle-pipe", limit=10)) >= 2


def test_create_pipeline_validation(client):
    with pytest.raises(ValidationError) as err:
        client.create_pipeline("Bad_Name", steps=[ModelRef("double")])
    assert "pipeline_id" in str(err.value) and "lowercase" in str(err.value)
    with pytest.raises(ValidationError) as err:
        client.create_pipeline("no-model-pipe", steps=[ModelRef("does-not-exist")])
    assert "definition.steps[0]" in str(err.value) and "does-not-exist" in str(err.value)
    empty = client.create_pipeline("empty-pipe", steps=[])  # as the SDK's build_pipeline: steps come later
    with pytest.raises(ValidationError) as err:
        client.deploy("empty-pipe", pipeline_id=empty.pipeline_id)
    assert "has no steps" in str(err.value)
    with pytest.raises(NotFoundError):
        client.get_pipeline("never-created")


def test_deploy_takes_the_sdks_nested_engine_config_and_names_bad_fields(client, double_pipeline):
    pipeline = client.get_pipeline(double_pipeline)
    step = pipeline.steps[0]
    key = f"{step['name']}-{client.list_model_versions(step['name'])[-1].id}"
    with pytest.raises(ValidationError) as err:
        client.deploy(double_pipeline, engine_config={
            "engine": {"cpu": 1}, "engineAux": {"images": {key: {"resources": {"requests": {"memory": "lots"}}}}}})
    assert f"engine_config.engineAux.images.{key}.resources.requests.memory" in str(err.value)
    with pytest.raises(ValidationError) as err:
        client.deploy(double_pipeline, engine_config={"engine": {"autoscale": {"scale_up_queue_depth": 4}}})
    assert "engine.autoscale.scale_up_queue_depth (4) needs engine.autoscale.replica_max" in str(err.value)
    with pytest.raises(ValidationError) as err:
        client.deploy(double_pipeline, engine_config={"engineAux": {"images": {"nope-9": {}}}})
    assert "engine_config.engineAux.images.nope-9: not a model of this pipeline" in str(err.value)
    assert client.get_pipeline(double_pipeline).status == "Running"  # a refused deploy changes nothing


def test_requirements_missing_from_the_environment_are_installed_for_the_sidekick(server, client, models_dir):
    predict = 'import wlrtinydep\nreturn {"y": input_data["x"] + wlrtinydep.OFFSET}'
    zip_path = make_model(models_dir / "deps", "with-deps", predict, extra={
        "requirements.txt": "--no-index\n--find-links wheels\nwlrtinydep==1.0\nnumpy>=1.0  # already satisfied\n",
        "wheels/wlrtinydep-1.0-py3-none-any.whl": tiny_wheel("wlrtinydep", "1.0", "OFFSET = 100.0\n"),
    })
    mv = client.upload_model("with-deps", zip_path, X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("deps-pipe", steps=[mv])
    dep = client.deploy("deps-pipe", pipeline_id=created.pipeline_id)
    client.wait_for_deployment(f"deps-pipe-{dep}", timeout_s=120)
    assert client.infer("deps-pipe", pd.DataFrame({"x": [1.0]}))["out.y"].tolist() == [101.0]
    installed = list((server.data_dir / "deps").glob("*/wlrtinydep/__init__.py"))
    assert len(installed) == 1
    client.undeploy("deps-pipe")


def test_unsatisfiable_requirements_fail_the_deploy_with_pips_reason(client, models_dir):
    zip_path = make_model(models_dir / "baddeps", "bad-deps", DOUBLE, extra={
        "requirements.txt": "--no-index\nwlr-not-available-anywhere==1.0\n",
    })
    mv = client.upload_model("bad-deps", zip_path, X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("bad-deps-pipe", steps=[mv])
    dep = client.deploy("bad-deps-pipe", pipeline_id=created.pipeline_id)
    from wallaroo_pulumi.client import DeploymentError

    with pytest.raises(DeploymentError) as err:
        client.wait_for_deployment(f"bad-deps-pipe-{dep}", timeout_s=120)
    assert "wlr-not-available-anywhere" in str(err.value)
