"""End to end on the REAL runtime: an LLM pipeline (BYOP stand-in model in a sidekick) logs its
inferences; listener tasks score them in their own sidekick processes (built-in and uploaded
listener models); a failing listener fails its run; the in-line validator returns scores."""

from __future__ import annotations

import zipfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.listeners.listener_helpers import BAD, GOOD
from tests.listeners.runtime_harness import Proc
from wallaroo_pulumi import scorers as S
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.runtime.services.listeners.executor import BUILTIN_DIR
from wallaroo_pulumi.scorers.schemas import listener_schemas
from wallaroo_pulumi.testing.byop import byop_source

FAKE_LLM = f"GOOD = {GOOD!r}\nBAD = {BAD!r}\n" + byop_source(
    """
    out = []
    for i, p in enumerate(input_data["text"].tolist()):
        out.append(BAD[i % len(BAD)] if "rude" in p else GOOD[i % len(GOOD)])
    return {"generated_text": np.array(out, dtype=object)}
    """,
    inference_cls="FakeLLM",
)

BROKEN_LISTENER = byop_source('raise ValueError("boom: this listener always fails")', inference_cls="Broken")


def zip_files(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def zip_folder(path: Path, folder: Path) -> Path:
    return zip_files(path, {p.name: p.read_text() for p in folder.glob("*.py")})


@pytest.fixture
def runtime(tmp_path: Path):
    srv = Proc("runtime", tmp_path / "data").start()
    yield srv
    srv.stop()


def deploy(c: WallarooClient, name: str, steps: list) -> None:
    created = c.create_pipeline(name, steps=steps)
    dep = c.deploy(name, pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    c.wait_for_deployment(f"{name}-{dep}", timeout_s=120)


def test_listeners_on_the_real_runtime(runtime: Proc, tmp_path: Path):
    import pyarrow as pa

    text_schema = pa.schema([("text", pa.string())])
    gen_schema = pa.schema([("generated_text", pa.string())])
    with WallarooClient(runtime.url, runtime.token, timeout=120) as c:
        llm = c.upload_model("fake-llm", zip_files(tmp_path / "llm.zip", {"model.py": FAKE_LLM}), text_schema, gen_schema)
        deploy(c, "llm", [llm])
        prompts = [f"please be {'rude' if i % 4 == 0 else 'kind'} #{i}" for i in range(40)]
        answers = c.infer("llm", pd.DataFrame({"text": prompts}))
        assert len(answers) == 40

        # 1. built-in listener, in its own sidekick
        t = runtime.post("/v1/api/task/run_once", {"name": "once", "workspace_id": 1, "json": {
            "monitored_pipeline": "llm", "listener_model": {"name": "combined"}, "batch_size": 16}})
        (run,) = runtime.wait_runs(t["id"])
        assert run["status"] == "success" and run["rows_scored"] == 40, (run, runtime.log_tail())
        res = runtime.post("/v1/api/listeners/results", {"pipeline": "llm", "listener": "combined"})["results"][0]
        assert res["count"] == 40
        recs = res["records"]
        texts = [r["in"]["text"] for r in recs]
        expect = S.score_all(texts)
        np.testing.assert_allclose([r["out"]["toxicity"] for r in recs], expect["toxicity"])
        np.testing.assert_allclose([r["out"]["sentiment_compound"] for r in recs], expect["sentiment_compound"])
        rude = [r for r in recs if r["in"]["text"] in BAD]
        assert len(rude) == 10 and all(r["out"]["toxicity"] > 0.9 for r in rude)
        # the scores are ordinary inference logs of the score pipeline
        assert len(c.logs("llm-combined-scores", limit=1000)) == 40

        # 2. an uploaded listener model (the toxicity folder), by name, through the registry
        inp, out = listener_schemas("toxicity")
        c.upload_model("my-toxicity", zip_folder(tmp_path / "tox.zip", BUILTIN_DIR / "toxicity"), inp, out)
        t2 = runtime.post("/v1/api/task/run_once", {"name": "uploaded", "workspace_id": 1, "json": {
            "monitored_pipeline": "llm", "listener_model": {"name": "my-toxicity"}}})
        (run2,) = runtime.wait_runs(t2["id"])
        assert run2["status"] == "success" and run2["rows_scored"] == 40, run2
        assert runtime.post("/v1/api/task/get_by_id", {"id": t2["id"]})["score_pipeline"] == "llm-my-toxicity-scores"

        # 3. a failing listener fails its run, with its error
        c.upload_model("broken", zip_files(tmp_path / "broken.zip", {"model.py": BROKEN_LISTENER}), inp, out)
        t3 = runtime.post("/v1/api/task/run_once", {"name": "broken", "workspace_id": 1, "json": {
            "monitored_pipeline": "llm", "listener_model": {"name": "broken"}}})
        (run3,) = runtime.wait_runs(t3["id"])
        assert run3["status"] == "failure" and "boom: this listener always fails" in run3["error"], run3
        assert runtime.post("/v1/api/task/get_by_id", {"id": t3["id"]})["last_run_status"] == "failure"
        lines = runtime.post("/v1/api/task/get_logs_for_run", {"id": run3["run_id"]})["logs"]
        assert any("boom" in x for x in lines)

        # every run is counted for alerting, by outcome, with the rows it scored
        metrics = httpx.get(f"{runtime.url}/metrics", headers={"Authorization": f"Bearer {runtime.token}"}).text
        for line in ('wallaroo_listener_runs_total{listener="combined",monitored_pipeline="llm",status="succeeded"} 1.0',
                     'wallaroo_listener_runs_total{listener="broken",monitored_pipeline="llm",status="failed"} 1.0',
                     'wallaroo_listener_rows_scored_total{listener="my-toxicity",monitored_pipeline="llm"} 40.0',
                     'wallaroo_listener_run_duration_seconds_count{listener="combined",monitored_pipeline="llm"} 1.0'):
            assert line in metrics, line

        # 4. the in-line validator: [llm, validator] answers with the text and its scores
        vin, vout = listener_schemas("validator")
        val = c.upload_model("validator", zip_folder(tmp_path / "val.zip", BUILTIN_DIR / "validator"), vin, vout)
        deploy(c, "llm-validated", [llm, val])
        df = c.infer("llm-validated", pd.DataFrame({"text": ["be rude", "be kind"]}))
        assert df["out.generated_text"].tolist() == [BAD[0], GOOD[1]]
        assert df["out.toxicity"][0] > 0.9 and df["out.toxicity"][1] < 0.3
        assert set(vout.names) <= {c[4:] for c in df.columns if c.startswith("out.")}
