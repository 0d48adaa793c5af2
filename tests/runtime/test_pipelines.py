"""Pipeline versions, undeploy / delete, model delete conflicts, redeploy with a new version."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, make_model
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
        client.delete_model(v1.model_id)
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
    client.delete_model(v1.model_id)
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
    with pytest.raises(ValidationError) as err:
        client.create_pipeline("no-model-pipe", steps=[])
    assert "definition.steps" in str(err.value)
    with pytest.raises(NotFoundError):
        client.get_pipeline("never-created")
