"""WallarooPublish of a split of two versions of one model, its engine_config keyed by the
`WallarooModel` resources (D47), through the real engine: the publish records each version's own
settings under that version's key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.publish.conftest import base_image, publishing_centre, registry  # noqa: F401 - fixtures
from tests.runtime.conftest import Server
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import write_model

PROGRAM = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import DeploymentConfigBuilder, RandomSplit, WallarooModel, WallarooPipeline, WallarooPublish

cfg = pulumi.Config()
schema = dict(input_schema=pa.schema([("x", pa.float64())]), output_schema=pa.schema([("y", pa.float64())]))
stable = WallarooModel("stable", name="scorer", path=cfg.require("stable"), **schema)
canary = WallarooModel("canary", name="scorer", path=cfg.require("canary"), **schema)
pipeline = WallarooPipeline("pipe", name="publish-versions", steps=[RandomSplit({stable: 90, canary: 10})],
                            deploy=False)
publish = WallarooPublish("release", pipeline=pipeline, engine_config=DeploymentConfigBuilder()
                          .sidekick_cpus(stable, 0.5).sidekick_cpus(canary, 2).build())
pulumi.export("publish_id", publish.publish_id)
pulumi.export("ids", pulumi.Output.all(stable.model_version_id, canary.model_version_id))
"""


@pytest.fixture(scope="module")
def runtime(publishing_centre: Server) -> Server:  # noqa: F811
    return publishing_centre


def test_a_publish_keeps_each_version_s_own_settings(stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("stable", str(write_model(tmp_path / "stable", factor=1.0)))
    stack.config_set("canary", str(write_model(tmp_path / "canary", factor=10.0)))
    stack.up()
    outs = stack.outputs()
    stable_id, canary_id = outs["ids"]
    images = api.publish_status(int(outs["publish_id"]))["engine_config"]["engineAux"]["images"]
    assert {k: v["resources"]["requests"]["cpu"] for k, v in images.items()} == {
        f"scorer-{stable_id}": 0.5, f"scorer-{canary_id}": 2.0}
    stack.destroy()
