"""`pulumi up` of a pipeline whose step asks for a GPU, on a machine without one: the real engine
and provider fail the update with the runtime's reason, in the Kubernetes scheduler's words."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import Server, server_env
from tests.runtime.test_honest_status import SCHEDULER_WORDS, machine_has_gpu
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import failure_text, write_model

pytestmark = pytest.mark.skipif(machine_has_gpu(), reason="this check needs a machine without a GPU")

PROGRAM = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import DeploymentConfigBuilder, WallarooModel, WallarooPipeline

cfg = pulumi.Config()
schema = dict(input_schema=pa.schema([("x", pa.float64())]), output_schema=pa.schema([("y", pa.float64())]))
model = WallarooModel("gpu-model", path=cfg.require("path"), **schema)
deployment = (DeploymentConfigBuilder().cpus(1).memory("512Mi")
              .sidekick_cpus(model, 0.5).sidekick_memory(model, "1Gi").sidekick_gpus(model, 1).build())
pipeline = WallarooPipeline("gpu-pipe", name="gpu-pipe", steps=[model], deployment=deployment, deploy_timeout_s=60)
pulumi.export("status", pipeline.status)
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = server_env()
    env.pop("CUDA_VISIBLE_DEVICES", None)  # the machine as its driver shows it
    env.pop("WALLAROO_ALLOW_GPU_FALLBACK", None)
    srv = Server(tmp_path_factory.mktemp("runtime") / "data", [], env)
    srv.start()
    yield srv
    srv.stop()


def test_up_of_a_gpu_step_without_a_gpu_fails_with_insufficient_nvidia_gpu(stack: PulumiStack, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("path", str(write_model(tmp_path / "model")))
    result = stack.up(check=False)
    text = failure_text(result)
    assert any(d.get("severity") == "error" for d in result.diagnostics), text
    assert SCHEDULER_WORDS in text, text
    assert "step 'gpu-model' asks for 1 GPU(s)" in text and "--allow-gpu-fallback" in text, text
