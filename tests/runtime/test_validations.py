"""Wallaroo's validations (the SDK's `add_validations` Check step) on a REAL runtime: each row's
`anomaly.<name>` verdicts, `anomaly.count` and `check_failures` in JSON and Arrow answers and in the
logs; an expression the runtime cannot evaluate is refused at pipeline create, naming it. The
expressions below are what polars 0.18.15 (the SDK's pin) writes for them, captured verbatim."""

from __future__ import annotations

import json

import httpx
import pyarrow as pa
import pytest

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, make_model

JSON = "application/json; format=pandas-records"
ARROW = "application/vnd.apache.arrow.file"
# pl.col("out.y").gt(5.0).alias("too_high"), (pl.col("in.x") < 0).alias("negative_in")
TOO_HIGH = '{"Alias":[{"BinaryExpr":{"left":{"Column":"out.y"},"op":"Gt","right":{"Literal":{"Float64":5.0}}}},"too_high"]}'
NEGATIVE = '{"Alias":[{"BinaryExpr":{"left":{"Column":"in.x"},"op":"Lt","right":{"Literal":{"Int32":0}}}},"negative_in"]}'
# pl.col("out.y").shift(1).gt(1), pl.col("out.y").sum().gt(1): row order and aggregates are not per-row checks
SHIFTED = ('{"Alias":[{"BinaryExpr":{"left":{"Function":{"input":[{"Column":"out.y"}],"function":{"Shift":1},"options":'
           '{"collect_groups":"ApplyGroups","fmt_str":"","input_wildcard_expansion":false,"auto_explode":false,'
           '"cast_to_supertypes":false,"allow_rename":false,"pass_name_to_apply":false,"changes_length":false,'
           '"check_lengths":true,"allow_group_aware":true}}},"op":"Gt","right":{"Literal":{"Int32":1}}}},"shifted"]}')
TOTAL = '{"Alias":[{"BinaryExpr":{"left":{"Agg":{"Sum":{"Column":"out.y"}}},"op":"Gt","right":{"Literal":{"Int32":1}}}},"total"]}'
GHOST = '{"Alias":[{"BinaryExpr":{"left":{"Column":"out.nope"},"op":"Gt","right":{"Literal":{"Float64":5.0}}}},"ghost"]}'


@pytest.fixture(scope="module")
def model(client, models_dir):
    return client.upload_model("double-checked", make_model(models_dir, "double-checked", DOUBLE), X_SCHEMA, Y_SCHEMA)


def create(server, name: str, steps: list[dict]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/api/pipelines/create", headers=server.headers, timeout=30,
                      json={"pipeline_id": name, "workspace_id": 1, "definition": {"steps": steps}})


def model_step(model) -> dict:
    return {"ModelInference": {"models": [{"name": model.name, "version": model.version, "sha": model.sha}]}}


@pytest.fixture(scope="module")
def checked(server, client, model) -> str:
    created = create(server, "checked", [model_step(model), {"Check": {"tree": [TOO_HIGH, NEGATIVE]}}])
    assert created.status_code == 200, created.text
    dep = client.deploy("checked", pipeline_id=created.json()["pipeline_pk_id"], engine_config={"replica_count": 1})
    client.wait_for_deployment(f"checked-{dep}", timeout_s=60)
    return f"{server.url}/v1/api/pipelines/infer/checked-{dep}/checked"


def test_each_row_carries_its_verdicts_in_json_and_arrow(server, checked):
    body = json.dumps([{"x": 1.0}, {"x": 3.0}, {"x": -1.0}, {"x": -4.0}])
    answer = httpx.post(checked, content=body, headers={**server.headers, "Content-Type": JSON}, timeout=30)
    assert answer.status_code == 200, answer.text
    records = answer.json()
    assert [r["anomaly"] for r in records] == [
        {"count": 0, "too_high": False, "negative_in": False},
        {"count": 1, "too_high": True, "negative_in": False},
        {"count": 1, "too_high": False, "negative_in": True},
        {"count": 1, "too_high": False, "negative_in": True},
    ]
    assert [r["check_failures"] for r in records] == [[], [0], [1], [1]]

    arrow = httpx.post(checked, content=body, headers={**server.headers, "Content-Type": JSON, "Accept": ARROW}, timeout=30)
    table = pa.ipc.open_file(pa.py_buffer(arrow.content)).read_all()
    assert table.schema.field("anomaly.too_high").type == pa.bool_()
    assert table.column("anomaly.too_high").to_pylist() == [False, True, False, False]
    assert table.column("anomaly.negative_in").to_pylist() == [False, False, True, True]
    assert table.column("anomaly.count").to_pylist() == [0, 1, 1, 1]
    names = table.column_names
    assert names.index("out.y") < names.index("anomaly.count") < names.index("anomaly.too_high") < names.index("metadata.last_model")


def test_the_logs_keep_the_verdicts(server, client, checked):
    httpx.post(checked, content=b'[{"x": 10}]', headers={**server.headers, "Content-Type": JSON}, timeout=30)
    logs = httpx.post(f"{server.url}/v1/api/pipelines/get_logs", headers={**server.headers, "Accept": JSON}, timeout=30,
                      json={"pipeline_name": "checked", "workspace_id": 1, "order": "Desc", "page_size": 1})
    assert logs.status_code == 200, logs.text
    [latest] = logs.json()
    assert latest["in"] == {"x": 10.0} and latest["anomaly"] == {"count": 1, "too_high": True, "negative_in": False}
    frame = client.logs("checked", limit=50)
    assert {"anomaly.count", "anomaly.too_high", "anomaly.negative_in"} <= set(frame.columns)
    assert frame["anomaly.count"].sum() >= 1


def test_a_pipeline_without_validations_counts_no_anomaly(server, client, model):
    created = create(server, "unchecked", [model_step(model)])
    dep = client.deploy("unchecked", pipeline_id=created.json()["pipeline_pk_id"], engine_config={"replica_count": 1})
    client.wait_for_deployment(f"unchecked-{dep}", timeout_s=60)
    answer = httpx.post(f"{server.url}/v1/api/pipelines/infer/unchecked-{dep}/unchecked", content=b'[{"x": 100}]',
                        headers={**server.headers, "Content-Type": JSON}, timeout=30).json()
    assert answer[0]["anomaly"] == {"count": 0} and answer[0]["check_failures"] == []


@pytest.mark.parametrize(("tree", "expected"), [
    ([SHIFTED], "validation 'shifted'"),
    ([TOTAL], "the polars expression 'Agg' is not evaluated here"),
    ([GHOST], "column 'out.nope' is not among the step's columns"),
    (['{"Alias":[{"Column":"out.y"},"y"]}'], "a validation must be a condition"),
    ([TOO_HIGH, TOO_HIGH], "another validation has this name"),
    (['{"Alias":[{"BinaryExpr":{"left":{"Column":"in.x"},"op":"Gt","right":{"Literal":{"Utf8":"a"}}}},"mixed"]}'],
     "cannot be evaluated over the step's columns"),
])
def test_what_cannot_be_evaluated_is_refused_at_create(server, model, tree, expected):
    refused = create(server, "refused-check", [model_step(model), {"Check": {"tree": tree}}])
    assert refused.status_code == 400, refused.text
    assert "definition.steps[1].Check.tree[" in refused.text and expected in refused.text


def test_a_check_goes_after_the_model_steps(server, model):
    refused = create(server, "check-first", [{"Check": {"tree": [NEGATIVE]}}, model_step(model)])
    assert refused.status_code == 400 and "must come after every model step" in refused.text
