"""`/v1/graphql` (the subset of Wallaroo's schema the SDK reads) and the `dataset[]` query
parameters of inference, on a REAL runtime."""

from __future__ import annotations

import httpx

JSON = "application/json; format=pandas-records"


def gql(server, query: str, variables: dict | None = None) -> dict:
    r = httpx.post(server.url + "/v1/graphql", json={"query": query, "variables": variables}, headers=server.headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_introspection_and_a_pipeline_with_its_deployment(server, client, double_pipeline):
    types = gql(server, "{ __schema { queryType { name } types { name } } }")["data"]["__schema"]
    assert types["queryType"]["name"] == "query_root"
    assert {"pipeline", "deployment", "model", "workspace", "bigint", "jsonb"} <= {t["name"] for t in types["types"]}
    pipeline = client.get_pipeline(double_pipeline)
    data = gql(server, """query P($id: bigint!) { pipeline_by_pk(id: $id) {
        pipeline_id workspace { name } pipeline_versions(order_by: {id: desc}) { id version definition }
        deployment { deploy_id deployed engine_config deployment_pipeline_versions { pipeline_version { version } } } } }""",
               {"id": pipeline.pipeline_id})["data"]["pipeline_by_pk"]
    assert (data["pipeline_id"], data["workspace"]["name"]) == (double_pipeline, "default")
    assert data["pipeline_versions"][0]["version"] == pipeline.version
    assert data["deployment"]["deployed"] and data["deployment"]["deploy_id"] == double_pipeline
    assert data["deployment"]["deployment_pipeline_versions"][0]["pipeline_version"]["version"] == pipeline.version
    assert set(data["deployment"]["engine_config"]) == {"engine", "enginelb", "engineAux"}
    assert gql(server, "{ pipeline_by_pk(id: 987654) { id } }")["data"]["pipeline_by_pk"] is None


def test_a_bad_query_is_a_graphql_error_naming_the_field(server):
    body = gql(server, "{ pipeline { id no_such_field } }")
    assert body["data"] is None and "Cannot query field 'no_such_field' on type 'pipeline'" in body["errors"][0]["message"]
    body = gql(server, "mutation { update_pipeline { affected_rows } }")
    assert "mutations are not served: this GraphQL is read-only" in body["errors"][0]["message"]


def test_dataset_parameters_pick_parts_and_flatten_names(server, double_pipeline):
    url = f"{server.url}/infer/{double_pipeline}"
    headers = {**server.headers, "Content-Type": JSON}
    flat = httpx.post(url, content=b'[{"x": 2.0}]', headers=headers,
                      params={"dataset[]": "*", "dataset.exclude[]": "metadata", "dataset.separator": "."}).json()
    assert set(flat[0]) == {"time", "in.x", "out.y", "check_failures", "anomaly.count"} and flat[0]["out.y"] == 4.0
    only = httpx.post(url, content=b'[{"x": 2.0}]', headers=headers,
                      params=[("dataset[]", "out"), ("dataset[]", "metadata.partition"), ("dataset.separator", "/")]).json()
    assert set(only[0]) == {"out/y", "metadata/partition"}
    nested = httpx.post(url, content=b'[{"x": 2.0}]', headers=headers).json()  # none: the docs' nested records
    assert nested[0]["out"] == {"y": 4.0} and "metadata" in nested[0]
    bad = httpx.post(url, content=b'[{"x": 2.0}]', headers=headers, params={"dataset[]": "outputs"})
    assert bad.status_code == 400 and "dataset[]: unknown part 'outputs'" in bad.json()["msg"]
