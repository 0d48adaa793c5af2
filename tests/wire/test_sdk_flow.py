"""The Wallaroo SDK's core flow, unchanged, against the runtime: `wallaroo.Client(auth_type="token")`,
upload_model (BYOP, Framework.CUSTOM), build_pipeline, add_model_step, deploy with a
DeploymentConfigBuilder config whose sidekick_env carries a Vertex service account, infer (DataFrame,
Arrow), infer_from_file (JSON, Arrow), logs, undeploy; the credential reaches a Vertex stand-in."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.runtime.conftest import Server
from tests.wire.conftest import run_sdk
from wallaroo_pulumi import BYOP_DIR
from wallaroo_pulumi.packaging import pack
from wallaroo_pulumi.standins import VertexStandin

ROW = ["time", "in.text", "out.generated_text", "out.prompt_tokens", "out.completion_tokens", "out.error",
       "check_failures", "anomaly.count"]


@pytest.mark.timeout(1800)
def test_the_sdk_core_flow_runs_unchanged(sdk_python: str, wire_server: Server, tmp_path: Path) -> None:
    model = pack(BYOP_DIR / "vertex_llm", tmp_path)
    with VertexStandin() as vertex:
        account = vertex.create_service_account()
        (tmp_path / "service-account.json").write_text(json.dumps(account))
        [out] = run_sdk(sdk_python, "core_flow.py", wire_server.url, wire_server.token, str(tmp_path), str(model.path),
                        vertex.endpoint_url, str(tmp_path / "service-account.json"), server=wire_server)
        assert vertex.tokens_minted >= 1  # the sidekick signed in with the service account it was given

    assert out["workspace"] == "default"
    assert (out["model"]["name"], out["model"]["status"]) == ("vertex-llm", "ready")
    assert re.fullmatch(r"vertex-llm-\d+", out["model"]["uid"])  # the model version's images key
    assert out["status"] == "Running"
    image = out["engine_config"]["engineAux"]["images"][out["model"]["uid"]]
    assert {e["name"]: e["value"] for e in image["env"]} == {"APPLICATION_CREDENTIALS": "[secret]",
                                                             "VERTEX_ENDPOINT_URL": "[secret]"}
    assert re.fullmatch(re.escape(wire_server.url) + r"/v1/api/pipelines/infer/sdk-flow-\d+/sdk-flow", out["url"])
    assert out["infer_frame"]["generated_text"] == ["echo: hello from the sdk", "echo: second row"]
    assert out["infer_frame"]["error"] == ["", ""] and sorted(out["infer_frame"]["columns"]) == sorted(ROW)
    assert out["infer_arrow"] == {"columns": ROW, "generated_text": ["echo: arrow row"]}
    assert out["infer_from_file"] == {"json": ["echo: from a json file"], "arrow": ["echo: from an arrow file"]}
    assert out["infer_metadata_columns"] == ["metadata.dropped", "metadata.elapsed", "metadata.last_model",
                                             "metadata.partition", "metadata.pipeline_version"]
    assert out["logs"]["columns"] == ROW and out["logs"]["texts"] == sorted(
        ["hello from the sdk", "second row", "arrow row", "from a json file", "from an arrow file", "with metadata"])
    assert out["logs_arrow"] == {"rows": 2, "columns": ROW}
    assert out["bad_infer"]["type"] == "InferenceError" and "column 'text'" in out["bad_infer"]["message"]
    assert out["failure_logs"] == {"rows": 1}  # logs(valid=False): the failed inference, and only it
    assert out["deployed_after_undeploy"] is False
    listed = out["listed"]
    assert "default" in listed["workspaces"] and "vertex-llm" in listed["models"]
    assert "sdk-flow" in listed["pipelines"] and listed["get_pipeline"] == "sdk-flow"

    secret = account["private_key"].splitlines()[1]
    assert secret not in json.dumps(out) and secret not in wire_server.log_tail(10**7)
