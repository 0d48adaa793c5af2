"""A redeploy under load drops nothing: clients keep calling while the pipeline's sidekick env and
then its model version change (new sidekicks each time) and while a split's weights move; every
call is answered 200 (no 5xx, no connection error), and the new version takes over."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx

from tests.runtime.conftest import X_SCHEMA, Y_SCHEMA, make_model

SLOW = 'import time\ntime.sleep(0.02)\nreturn {"y": input_data["x"] * %s + len(os.environ.get("GEN", ""))}'
CLIENTS = 6


class Load:
    """CLIENTS threads calling `url` until stopped; what each call got."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.outcomes: Counter[str] = Counter()
        self.answers: list[float] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {self.token}",
                                               "Content-Type": "application/json; format=pandas-records"}) as http:
            while not self.stop.is_set():
                try:
                    r = http.post(self.url, content=json.dumps([{"x": 1.0}]))
                    outcome = str(r.status_code) if r.status_code != 200 else "ok"
                    detail = r.text[:200] if r.status_code != 200 else None
                    y = r.json()[0]["out"]["y"] if r.status_code == 200 else None
                except httpx.HTTPError as exc:
                    outcome, detail, y = f"connection: {type(exc).__name__}", str(exc), None
                with self.lock:
                    self.outcomes[outcome] += 1
                    if detail:
                        self.outcomes[f"detail: {detail}"] += 1
                    if y is not None:
                        self.answers.append(y)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_redeploys_under_load_drop_no_request(server, client, models_dir):
    v1 = client.upload_model("steady", make_model(models_dir / "steady1", "steady", SLOW % "2.0"), X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("steady-pipe", steps=[v1])
    dep = client.deploy("steady-pipe", pipeline_id=created.pipeline_id, engine_config={"sidekicks": {"steady": {"env": {"GEN": "a"}}}})
    client.wait_for_deployment(f"steady-pipe-{dep}", timeout_s=120)
    url = f"{server.url}/v1/api/pipelines/infer/steady-pipe-{dep}/steady-pipe"
    with Load(url, server.token) as load:
        time.sleep(1)
        for gen in ("bb", "ccc"):  # only the sidekick env: new sidekicks, same pipeline version
            client.deploy("steady-pipe", pipeline_id=created.pipeline_id,
                          engine_config={"sidekicks": {"steady": {"env": {"GEN": gen}}}})
            client.wait_for_deployment(f"steady-pipe-{dep}", timeout_s=120)
            time.sleep(1)
        # a new model version: a new pipeline version
        v2 = client.upload_model("steady", make_model(models_dir / "steady2", "steady", SLOW % "10.0"), X_SCHEMA, Y_SCHEMA)
        changed = client.create_pipeline("steady-pipe", steps=[v2])
        client.deploy("steady-pipe", pipeline_id=changed.pipeline_id, pipeline_version_pk_id=changed.pipeline_version_pk_id,
                      engine_config={"sidekicks": {"steady": {"env": {"GEN": "dddd"}}}})
        client.wait_for_deployment(f"steady-pipe-{dep}", timeout_s=120)
        time.sleep(1)
        for weight in (50, 90):  # a canary split of both versions, its weights moving
            split = client.create_pipeline("steady-pipe", steps=[{"RandomSplit": {"weights": [
                {"model": v1.ref().model_dump(exclude_none=True), "weight": 100 - weight},
                {"model": v2.ref().model_dump(exclude_none=True), "weight": weight}]}}])
            client.deploy("steady-pipe", pipeline_id=split.pipeline_id, pipeline_version_pk_id=split.pipeline_version_pk_id,
                          engine_config={"sidekicks": {"steady": {"env": {"GEN": "dddd"}}}})
            client.wait_for_deployment(f"steady-pipe-{dep}", timeout_s=120)
            time.sleep(1)
    assert set(load.outcomes) == {"ok"}, load.outcomes
    assert load.outcomes["ok"] > 100
    assert {3.0, 4.0, 5.0, 14.0, 6.0} <= set(load.answers)  # each generation answered, then both versions
    client.delete_pipeline("steady-pipe")


def test_a_long_call_outlives_two_redeploys(server, client, models_dir):
    """A call still running on a replaced version is answered even when the next deploy comes
    before it ends (the drain is not part of the deploy that a newer one cancels)."""
    slow = 'import time\nif float(input_data["x"][0]) == 99.0:\n    time.sleep(4)\nreturn {"y": input_data["x"] * 2.0}'
    mv = client.upload_model("long-call", make_model(models_dir / "long-call", "long-call", slow), X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("long-pipe", steps=[mv])
    dep = client.deploy("long-pipe", pipeline_id=created.pipeline_id)
    client.wait_for_deployment(f"long-pipe-{dep}", timeout_s=120)
    url = f"{server.url}/v1/api/pipelines/infer/long-pipe-{dep}/long-pipe"
    answer: dict = {}

    def long_call() -> None:
        r = httpx.post(url, content=json.dumps([{"x": 99.0}]), timeout=60,
                       headers={**server.headers, "Content-Type": "application/json; format=pandas-records"})
        answer.update(status=r.status_code, text=r.text)

    caller = threading.Thread(target=long_call)
    caller.start()
    time.sleep(1)  # the call is on the first version's sidekick
    for gen in ("b", "c"):  # two env changes, the second while the first version still drains
        client.deploy("long-pipe", pipeline_id=created.pipeline_id, engine_config={"sidekicks": {"long-call": {"env": {"GEN": gen}}}})
        client.wait_for_deployment(f"long-pipe-{dep}", timeout_s=120)
    caller.join(60)
    assert answer["status"] == 200, answer
    assert json.loads(answer["text"])[0]["out"]["y"] == 198.0
    client.delete_pipeline("long-pipe")
