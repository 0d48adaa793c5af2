"""The runtime says only what is so (issue 30), on the REAL runtime with real sidekick processes:

- a step asking for a GPU on a machine without one is refused with the Kubernetes scheduler's
  reason, unless the operator allows CPU fallback (then it runs, handed no device);
- the load balancer's and each model's status come from what runs: a failed deployment's balancer
  is not Running, and a model whose only worker died and cannot come back shows Error;
- the in-line validator does not score a row whose upstream LLM call failed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest

from wallaroo_pulumi.adapters.schemas import LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA
from wallaroo_pulumi.client import DeploymentError, WallarooClient
from wallaroo_pulumi.scorers.schemas import listener_schemas
from wallaroo_pulumi.standins.openai_server import OpenAIStandin

from .conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, Server, make_model, server_env

REPO = Path(__file__).resolve().parents[2]
SCHEDULER_WORDS = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu"


def machine_has_gpu() -> bool:
    """Seen from outside the runtime: a driver's GPU, a device node, or nvidia-smi listing one."""
    if glob.glob("/proc/driver/nvidia/gpus/*") or glob.glob("/dev/nvidia[0-9]*"):
        return True
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        return out.returncode == 0 and "GPU " in out.stdout
    return False


def start(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None) -> Server:
    environ = server_env()
    environ.pop("CUDA_VISIBLE_DEVICES", None)  # what the machine has, as the driver says
    environ.pop("WALLAROO_ALLOW_GPU_FALLBACK", None)
    environ.update(env or {})
    return Server(tmp_path / name, list(args), environ).start()


def status_raw(srv: Server, name: str) -> dict:
    r = httpx.post(f"{srv.url}/v1/api/status/get_deployment", json={"name": name}, headers=srv.headers, timeout=30)
    r.raise_for_status()
    return r.json()


ENV_ECHO = """
devices = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
return {"y": input_data["x"] * 0.0, "devices": np.full(len(input_data["x"]), devices, dtype=object)}
"""


def deploy_gpu_step(c: WallarooClient, tmp_path: Path) -> int:
    import pyarrow as pa

    out_schema = pa.schema([("y", pa.float64()), ("devices", pa.string())])
    mv = c.upload_model("gpu-step", make_model(tmp_path, "gpu-step", ENV_ECHO), X_SCHEMA, out_schema)
    created = c.create_pipeline("gpu-pipe", steps=[mv])
    return c.deploy("gpu-pipe", pipeline_id=created.pipeline_id,
                    engine_config={"replica_count": 1, "sidekicks": {"gpu-step": {"gpus": 1}}})


@pytest.mark.skipif(machine_has_gpu(), reason="this check needs a machine without a GPU")
def test_a_gpu_step_on_a_machine_without_one_is_refused_with_the_schedulers_reason(tmp_path: Path) -> None:
    srv = start(tmp_path, "nogpu")
    try:
        with srv.client() as c:
            dep = deploy_gpu_step(c, tmp_path)
            with pytest.raises(DeploymentError) as err:
                c.wait_for_deployment(f"gpu-pipe-{dep}", timeout_s=60)
            assert SCHEDULER_WORDS in str(err.value)
            assert "step 'gpu-step' asks for 1 GPU(s) and this machine has 0 visible" in str(err.value)
            assert "--allow-gpu-fallback" in str(err.value)
            raw = status_raw(srv, f"gpu-pipe-{dep}")
        assert raw["status"] == "Error" and SCHEDULER_WORDS in raw["reason"]
        assert [lb["info"]["health"] for lb in raw["engine_lbs"]] == ["Error"]  # no balancer Running for it
        assert raw["engines"][0]["info"]["health"] == "Error"
        assert [(m["name"], m["status"]) for m in raw["engines"][0]["model_statuses"]["models"]] == [("gpu-step", "Error")]
        assert [s["info"]["health"] for s in raw["sidekicks"]] == ["Error"]
        assert "gpus '0'" not in srv.log_tail(200_000)  # never handed a device that is not there
    finally:
        srv.stop()


@pytest.mark.skipif(machine_has_gpu(), reason="this check needs a machine without a GPU")
@pytest.mark.parametrize("how", ["flag", "env"])
def test_gpu_fallback_when_the_operator_allows_it_runs_the_step_on_cpu(tmp_path: Path, how: str) -> None:
    srv = (start(tmp_path, "fallback", "--allow-gpu-fallback") if how == "flag"
           else start(tmp_path, "fallback", env={"WALLAROO_ALLOW_GPU_FALLBACK": "1"}))
    try:
        with srv.client() as c:
            dep = deploy_gpu_step(c, tmp_path)
            assert c.wait_for_deployment(f"gpu-pipe-{dep}", timeout_s=60) == "Running"
            out = c.infer("gpu-pipe", pd.DataFrame({"x": [1.0]}))
        assert out["out.devices"].tolist() == [""]  # no device at all, not a made-up '0'
        assert "running it with CPU only (GPU fallback allowed)" in srv.log_tail(200_000)
    finally:
        srv.stop()


# Loads while the test's loopback gate says so; a restart after the gate closes fails to load. (Not
# a marker file: as root each start of a worker gets a fresh scratch tmpfs, so nothing written there
# outlives it, which is the point of a sandbox.)
GATED = """
import urllib.request
answer = urllib.request.urlopen(os.environ["LOAD_GATE"], timeout=10).read().decode()
if answer != "open":
    raise RuntimeError("this model loads only once")
"""


@contextmanager
def load_gate() -> Iterator[tuple[str, threading.Event]]:
    """A loopback HTTP server answering 'open' until the event is set, 'closed' after."""
    closed = threading.Event()

    class Gate(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = b"closed" if closed.is_set() else b"open"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", closed
    finally:
        server.shutdown()
        server.server_close()


def test_a_killed_sidekick_that_cannot_come_back_shows_in_status(tmp_path: Path) -> None:
    srv = start(tmp_path, "killed")
    try:
        with srv.client() as c, load_gate() as (gate_url, gate_closed):
            mv = c.upload_model("once", make_model(tmp_path, "once", DOUBLE, load_body=GATED), X_SCHEMA, Y_SCHEMA)
            created = c.create_pipeline("once-pipe", steps=[mv])
            dep = c.deploy("once-pipe", pipeline_id=created.pipeline_id,
                           engine_config={"replica_count": 1, "sidekicks": {"once": {"env": {"LOAD_GATE": gate_url}}}})
            name = f"once-pipe-{dep}"
            c.wait_for_deployment(name, timeout_s=60)
            raw = status_raw(srv, name)
            assert [m["status"] for m in raw["engines"][0]["model_statuses"]["models"]] == ["Running"]
            assert raw["engines"][0]["info"]["health"] == "Running"
            assert [lb["info"]["health"] for lb in raw["engine_lbs"]] == ["Running"]
            pid = raw["sidekicks"][0]["info"]["pid"]
            gate_closed.set()
            os.kill(pid, 9)
            import time

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                raw = status_raw(srv, name)
                model = raw["engines"][0]["model_statuses"]["models"][0]
                if model["status"] == "Error":
                    break
                time.sleep(0.2)
        assert model["status"] == "Error", raw
        assert "this model loads only once" in model["reason"]
        assert raw["engines"][0]["info"]["health"] == "Error"
        assert raw["engines"][0]["pipeline_statuses"]["pipelines"][0]["status"] == "Error"
        sidekick = raw["sidekicks"][0]["info"]
        assert sidekick["health"] == "Error" and "this model loads only once" in sidekick["reason"]
    finally:
        srv.stop()


def zip_folder(dest: Path, folder: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(folder).as_posix())
    return dest


def test_the_validator_leaves_a_row_whose_upstream_call_failed_unscored(tmp_path: Path) -> None:
    standin = OpenAIStandin(api_keys=["sk-test"]).start()
    srv = start(tmp_path, "validator")
    try:
        with srv.client(timeout=180) as c:
            llm = c.upload_model("llm", zip_folder(tmp_path / "llm.zip", REPO / "components/byop/openai_llm"),
                                 LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA)
            vin, vout = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
            val = c.upload_model("validator", zip_folder(tmp_path / "val.zip", REPO / "components/byop/listeners/validator"),
                                 vin, vout)
            created = c.create_pipeline("validated", steps=[llm, val])
            env = {"OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "gpt-4o-mini", "OPENAI_BASE_URL": f"{standin.base_url}/v1",
                   "MAX_RETRIES": "0", "MAX_CONCURRENCY": "1"}
            dep = c.deploy("validated", pipeline_id=created.pipeline_id, engine_config={
                "replica_count": 1, "sidekicks": {"llm": {"env": env}, "validator": {"memory": "2Gi"}}})
            c.wait_for_deployment(f"validated-{dep}", timeout_s=180)
            standin.faults.server_error_next(1, status=500)  # the first row's upstream call fails
            df = c.infer("validated", pd.DataFrame({"text": ["first prompt", "second prompt"]}))
            standin.faults.server_error_next(1, status=500)  # a batch of failed rows only
            alone = c.infer("validated", pd.DataFrame({"text": ["lonely prompt"]})).iloc[0]
        scores = [n for n in vout.names if n not in LLM_OUTPUT_SCHEMA.names]
        assert scores
        failed, ok = df.iloc[0], df.iloc[1]
        assert failed["out.error"] and "500" in failed["out.error"], failed.to_dict()
        assert failed["out.generated_text"] == ""
        assert all(pd.isna(failed[f"out.{s}"]) for s in scores), failed.to_dict()  # null, not the score of ""
        assert ok["out.error"] == "" and ok["out.generated_text"]
        assert alone["out.error"] and all(pd.isna(alone[f"out.{s}"]) for s in scores), alone.to_dict()
        assert all(isinstance(ok[f"out.{s}"], float) and not pd.isna(ok[f"out.{s}"]) for s in scores), ok.to_dict()
    finally:
        srv.stop()
        standin.stop()
