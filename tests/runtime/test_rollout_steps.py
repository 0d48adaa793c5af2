"""Splits, key splits, shadow deploys and fallbacks through the REAL runtime: each model its own
sidekick; observed shares against weights, sticky hash keys, key routing, shadow answers only
in the logs, per-row fallback, and the `out._model_split` column that names who answered."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from tests.runtime.conftest import X_SCHEMA, Y_SCHEMA, make_model
from wallaroo_pulumi.client import ValidationError, WallarooClient

JSON = "application/json; format=pandas-records"
FACTOR = {"ra": 1.0, "rb": 10.0, "rc": 100.0}  # each model answers y = x * its factor: y says who answered
YE_SCHEMA = pa.schema([("y", pa.float64()), ("error", pa.string())])


@pytest.fixture(scope="module")
def refs(client: WallarooClient, models_dir: Path) -> dict[str, dict]:
    out = {}
    for name, k in FACTOR.items():
        mv = client.upload_model(name, make_model(models_dir / name, name, f'return {{"y": input_data["x"] * {k}}}'),
                                 X_SCHEMA, Y_SCHEMA)
        out[name] = {"name": mv.name, "version": mv.version, "sha": mv.sha}
    return out


def deploy(client: WallarooClient, name: str, steps: list) -> str:
    created = client.create_pipeline(name, steps=steps)
    dep = client.deploy(name, pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    client.wait_for_deployment(f"{name}-{dep}", timeout_s=120)
    return f"/v1/api/pipelines/infer/{name}-{dep}/{name}"


def post(server, path: str, records: list[dict]) -> list[dict]:
    r = httpx.post(server.url + path, content=json.dumps(records), timeout=60,
                   headers={"Authorization": f"Bearer {server.token}", "Content-Type": JSON})
    assert r.status_code == 200, r.text
    return r.json()


def served(record: dict) -> str:
    [label] = record["out"]["_model_split"]
    return json.loads(label)["name"]


def test_random_split_shares_follow_the_weights(server, client, refs):
    path = deploy(client, "split-shares", [{"RandomSplit": {"hash_key": None, "weights": [
        {"model": refs["ra"], "weight": 80}, {"model": refs["rb"], "weight": 20}]}}])
    status = client.deployment_status(path.split("/")[-2])
    assert sorted(sk.step for sk in status.sidekicks) == ["ra", "rb"]  # each model its own sidekick
    seen: Counter[str] = Counter()
    for _ in range(8):
        for rec in post(server, path, [{"x": 1.0}] * 500):
            who = served(rec)
            assert rec["out"]["y"] == FACTOR[who]  # the model that answered is the one named
            assert json.loads(rec["out"]["_model_split"][0]) == refs[who]
            seen[who] += 1
    share = seen["rb"] / 4000
    # 4000 draws at p=0.2: sd 0.0063; 0.03 is ~4.7 sd, so this fails by chance about once in 400,000 runs
    assert abs(share - 0.2) < 0.03, seen
    client.delete_pipeline("split-shares")


def test_a_weights_change_restarts_no_sidekick(server, client, refs):
    def split(a: int, b: int) -> list[dict]:
        return [{"RandomSplit": {"weights": [{"model": refs["ra"], "weight": a}, {"model": refs["rb"], "weight": b}]}}]

    def pids(name: str) -> dict[str, int]:
        return {sk.step: sk.pid for sk in client.deployment_status(name).sidekicks}

    path = deploy(client, "split-weights", split(100, 0))
    name = path.split("/")[-2]
    before = pids(name)
    assert {served(r) for r in post(server, path, [{"x": 1.0}] * 50)} == {"ra"}
    created = client.create_pipeline("split-weights", steps=split(0, 100))
    client.deploy("split-weights", pipeline_id=created.pipeline_id, pipeline_version_pk_id=created.pipeline_version_pk_id,
                  engine_config={"replica_count": 1})
    client.wait_for_deployment(name, timeout_s=120)
    assert {served(r) for r in post(server, path, [{"x": 1.0}] * 50)} == {"rb"}  # the new weights serve
    assert pids(name) == before  # the same sidekicks: only the routing changed
    # a sidekick's env changes: that model's sidekick is new, the other one stays
    client.deploy("split-weights", pipeline_id=created.pipeline_id, pipeline_version_pk_id=created.pipeline_version_pk_id,
                  engine_config={"replica_count": 1, "sidekicks": {"ra": {"env": {"NEW": "1"}}}})
    client.wait_for_deployment(name, timeout_s=120)
    after = pids(name)
    assert after["rb"] == before["rb"] and after["ra"] != before["ra"]
    client.delete_pipeline("split-weights")


def test_a_hash_key_sends_a_key_to_the_same_model_every_time(server, client, refs):
    path = deploy(client, "split-sticky", [{"RandomSplit": {"hash_key": "user_id", "weights": [
        {"model": refs["ra"], "weight": 1}, {"model": refs["rb"], "weight": 1}]}}])
    users = [f"user-{i}" for i in range(200)]
    first = {u: served(r) for u, r in zip(users, post(server, path, [{"x": 1.0, "user_id": u} for u in users]), strict=True)}
    assert set(Counter(first.values())) == {"ra", "rb"}  # both models get users
    # again, in another order and as Arrow (the key is not in the model's schema: read from the body)
    again = list(reversed(users))
    table = pa.table({"x": [1.0] * len(again), "user_id": again})
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    r = httpx.post(server.url + path, content=sink.getvalue(), timeout=60,
                   headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/vnd.apache.arrow.file"})
    assert r.status_code == 200, r.text
    answer = pa.ipc.open_file(pa.py_buffer(r.content)).read_all()
    labels = [json.loads(v[0])["name"] for v in answer.column("out._model_split").to_pylist()]
    assert dict(zip(again, labels, strict=True)) == first
    # Wallaroo's own use: a float in [0, 1] is the draw itself
    low, high = post(server, path, [{"x": 1.0, "user_id": 0.1}, {"x": 1.0, "user_id": 0.9}])
    assert (served(low), served(high)) == ("ra", "rb")
    client.delete_pipeline("split-sticky")


def test_a_key_split_routes_every_key_as_declared(server, client, refs):
    path = deploy(client, "key-split", [{"MetaValueSplit": {"split_key": "tier", "control": refs["ra"],
                                                           "routes": {"gold": refs["rb"], "silver": refs["rc"]}}}])
    rows = [{"x": 2.0, "tier": t} for t in ("gold", "silver", "bronze", "gold", None)] + [{"x": 2.0}]
    answers = post(server, path, rows)
    assert [served(a) for a in answers] == ["rb", "rc", "ra", "rb", "ra", "ra"]
    assert [a["out"]["y"] for a in answers] == [20.0, 200.0, 2.0, 20.0, 2.0, 2.0]
    client.delete_pipeline("key-split")


def test_a_shadow_logs_the_challengers_and_answers_with_the_champion(server, client, refs):
    path = deploy(client, "shadow", [{"ModelInference": {"models": [refs["ra"], refs["rb"], refs["rc"]]}},
                                     {"AuditResults": {"from": 1, "to": None}}, {"MultiOut": {}}])
    xs = [float(i) for i in range(1, 51)]
    answers = post(server, path, [{"x": x} for x in xs])
    assert [a["out"]["y"] for a in answers] == xs
    assert all(set(a) == {"time", "in", "out", "check_failures", "anomaly", "metadata"} for a in answers)
    assert all(set(a["out"]) == {"y"} for a in answers)  # no challenger, no split column in the answer
    logs = client.logs("shadow", limit=100)
    assert len(logs) == 50
    logs = logs.sort_values("in.x")
    assert logs["out.y"].tolist() == xs
    assert logs["out_rb.y"].tolist() == [x * 10 for x in xs] and logs["out_rc.y"].tolist() == [x * 100 for x in xs]
    client.delete_pipeline("shadow")


def test_a_fallback_retries_failed_rows_on_the_next_model(server, client, models_dir):
    # primary: 429 for x < 0, a 400 (not a fall-through error) for x == 0; secondary answers all
    primary = client.upload_model("fb-primary", make_model(models_dir / "fbp", "fb-primary", '''
x = input_data["x"]
err = np.where(x < 0, "p: HTTP 429 Too Many Requests after 4 attempts: slow down",
               np.where(x == 0, "p: HTTP 400 Bad Request after 1 attempt", ""))
return {"y": x, "error": err.astype(str)}'''), X_SCHEMA, YE_SCHEMA)
    secondary = client.upload_model("fb-secondary", make_model(models_dir / "fbs", "fb-secondary",
                                    'return {"y": input_data["x"] * 10.0, "error": np.array([""] * len(input_data["x"]))}'),
                                    X_SCHEMA, YE_SCHEMA)
    path = deploy(client, "fallback", [{"Fallback": {"models": [primary.ref().model_dump(exclude_none=True),
                                                                  secondary.ref().model_dump(exclude_none=True)],
                                                       "on": ["429", "5xx", "timeout"]}}])
    answers = post(server, path, [{"x": x} for x in (1.0, -1.0, 0.0, 2.0, -3.0)])
    assert [a["out"]["y"] for a in answers] == [1.0, -10.0, 0.0, 2.0, -30.0]
    assert [served(a) for a in answers] == ["fb-primary", "fb-secondary", "fb-primary", "fb-primary", "fb-secondary"]
    assert answers[2]["out"]["error"].startswith("p: HTTP 400")  # not a fall-through error: answered as is
    logs = client.logs("fallback", limit=10)
    assert sorted(json.loads(v[0])["name"] for v in logs["out._model_split"]) == ["fb-primary"] * 3 + ["fb-secondary"] * 2
    client.delete_pipeline("fallback")


@pytest.mark.parametrize(("steps", "expected"), [
    ([{"RandomSplit": {"weights": [{"model": {"name": "ra"}, "weight": -1}]}}], "definition.steps[0].RandomSplit.weights.0.weight"),
    ([{"RandomSplit": {"weights": [{"model": {"name": "ra"}, "weight": 0}]}}], "add up to 0"),
    ([{"MetaValueSplit": {"control": {"name": "ra"}, "routes": {}}}], "definition.steps[0].MetaValueSplit.split_key"),
    ([{"ModelInference": {"models": [{"name": "ra"}, {"name": "rb"}]}}], "shadow deploy only"),
    ([{"MultiOut": {}}], "definition.steps[0]: MultiOut is served only as part of a shadow deploy"),
    ([{"Nth": {"index": 0}}], "definition.steps[0]: step kind 'Nth' is not served"),
    ([{"Fallback": {"models": [{"name": "ra"}], "on": ["404"]}}], "definition.steps[0].Fallback.on.0"),
    ([{"MetaValueSplit": {"split_key": "k", "control": {"name": "ra"}, "routes": {"a": {"name": "nope"}}}}],
     "definition.steps[0].MetaValueSplit.routes['a']: no model 'nope'"),
])
def test_bad_steps_are_refused_naming_the_field(client, refs, steps, expected):
    with pytest.raises(ValidationError) as err:
        client.create_pipeline("bad-rollout", steps=steps)
    assert expected in str(err.value)


def test_the_stored_definition_is_wallaroos(server, client, refs):
    steps = [{"RandomSplit": {"hash_key": "k", "weights": [{"model": {"name": "ra"}, "weight": 3},
                                                         {"model": {"name": "rb"}, "weight": 1}]}},
             {"ModelInference": {"models": [{"name": "ra"}, {"name": "rc"}]}}, {"AuditResults": {"from": 1}}, {"MultiOut": {}}]
    client.create_pipeline("stored-rollout", steps=steps)
    r = httpx.post(server.url + "/v1/api/pipelines/list_pipeline_versions", headers=server.headers,
                   json={"pipeline_id": "stored-rollout", "workspace_id": 1})
    assert r.status_code == 200, r.text
    [item] = r.json()["pipeline_versions"]
    assert item["pipeline_version"]["steps"] == {"steps": [
        {"RandomSplit": {"hash_key": "k", "weights": [{"model": refs["ra"], "weight": 3.0}, {"model": refs["rb"], "weight": 1.0}]}},
        {"ModelInference": {"models": [refs["ra"], refs["rc"]]}}, {"AuditResults": {"from": 1, "to": None}}, {"MultiOut": {}}]}
    client.delete_pipeline("stored-rollout")


def test_a_plain_pipeline_answers_without_a_split_column(server, client, double_pipeline):
    out = client.infer(double_pipeline, pd.DataFrame({"x": [1.0]}))
    assert "out._model_split" not in out.columns


def test_two_versions_of_one_model_in_a_split_each_have_their_own_sidekick_env(server, client, models_dir):
    """The SDK keys sidekick settings by `model_version.uid()` ('<name>-<model version id>'): with
    two versions of one model in a split, each version's key configures that version only."""
    body = 'return {"y": input_data["x"] * float(__import__("os").environ["FACTOR"])}'
    v1 = client.upload_model("rv", make_model(models_dir / "rv1", "rv", body + "  # v1"), X_SCHEMA, Y_SCHEMA)
    v2 = client.upload_model("rv", make_model(models_dir / "rv2", "rv", body + "  # v2"), X_SCHEMA, Y_SCHEMA)
    assert v1.version != v2.version
    refs = [{"name": "rv", "version": v.version, "sha": v.sha} for v in (v1, v2)]
    created = client.create_pipeline("two-versions", steps=[{"RandomSplit": {"weights": [
        {"model": refs[0], "weight": 1}, {"model": refs[1], "weight": 1}]}}])
    images = {f"rv-{v1.id}": {"env": [{"name": "FACTOR", "value": "2"}]},
              f"rv-{v2.id}": {"env": [{"name": "FACTOR", "value": "3"}]}}
    dep = client.deploy("two-versions", pipeline_id=created.pipeline_id,
                        engine_config={"engine": {"replicas": 1}, "engineAux": {"images": images}})
    client.wait_for_deployment(f"two-versions-{dep}", timeout_s=120)
    answers = post(server, f"/v1/api/pipelines/infer/two-versions-{dep}/two-versions", [{"x": 1.0}] * 200)
    factor = {v1.version: 2.0, v2.version: 3.0}
    seen = Counter(json.loads(a["out"]["_model_split"][0])["version"] for a in answers)
    assert set(seen) == {v1.version, v2.version}, seen  # 200 rows at 1:1: both versions serve
    for a in answers:
        assert a["out"]["y"] == factor[json.loads(a["out"]["_model_split"][0])["version"]]
    assert sorted(sk.step for sk in client.deployment_status(f"two-versions-{dep}").sidekicks) == ["rv", "rv#2"]
    client.delete_pipeline("two-versions")
