"""The graph behind `schema.graphql`: each object is a dict whose relations are functions, which
graphql-core's default resolver calls with the field's arguments, so only what a query asks for is
read (`_ws`, the object's workspace, is never a field). Read-only: changes go through the MLOps API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from graphql import (
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    build_schema,
    graphql_sync,
    parse,
)

from wallaroo_pulumi.runtime.services.access.usage import current_key
from wallaroo_pulumi.runtime.services.deployments import Deployments
from wallaroo_pulumi.runtime.services.pipelines import Pipelines, step_refs
from wallaroo_pulumi.runtime.services.registry import Registry
from wallaroo_pulumi.runtime.store.db import Database
from wallaroo_pulumi.runtime.wire import answers

Node = dict[str, Any]
SCHEMA_FILE = Path(__file__).with_name("schema.graphql")
DEFAULT_WORKSPACE = 1  # every caller's default workspace: there are no users here


class Graph:
    def __init__(self, db: Database, registry: Registry, pipelines: Pipelines, deployments: Deployments,
                 orchestration: Callable[[str], Node | None] = lambda _id: None) -> None:
        self.db = db
        self.orchestration = orchestration  # an orchestration's Wallaroo shape by id (None: no such)
        self.registry = registry
        self.pipelines = pipelines
        self.deployments = deployments
        self.schema: GraphQLSchema = build_schema(SCHEMA_FILE.read_text())

    def execute(self, query: str, variables: dict[str, Any] | None, operation: str | None) -> dict[str, Any]:
        """Run a query for the current request's key: a key scoped to a workspace sees only its objects."""
        if _mutates(query):
            return {"data": None, "errors": [{"message": "mutations are not served: this GraphQL is read-only; "
                                                        "change objects through the MLOps API (/v1/api/docs)"}]}
        key = current_key.get()
        home = key.workspace_id if key is not None and key.role != "admin" else None
        result: ExecutionResult = graphql_sync(self.schema, query, root_value=self._root(home),
                                               variable_values=variables, operation_name=operation)
        return result.formatted

    def _root(self, home: int | None) -> Node:
        def seen(node: Node | None) -> Node | None:
            return node if node is not None and home in (None, node["_ws"]) else None

        def listed(nodes: Iterable[Node], where: dict[str, Any] | None, order_by: Any) -> list[Node]:
            return _filter([n for n in nodes if seen(n)], where, order_by)

        default = home or DEFAULT_WORKSPACE
        return {
            "user_default_workspace": lambda _i, where=None: [
                {"user_id": _eq(where, "user_id") or "", "workspace_id": default,
                 "workspace": lambda _i: self._workspace(default)}],
            "workspace": lambda _i, where=None, order_by=None: listed(
                map(self._workspace_node, self.db.all("SELECT * FROM workspaces ORDER BY id")), where, order_by),
            "workspace_by_pk": lambda _i, id: seen(self._workspace(id)),
            "models": lambda _i, where=None, order_by=None: listed(
                map(self._models_node, self.db.all("SELECT * FROM models ORDER BY id")), where, order_by),
            "models_by_pk": lambda _i, id: seen(self._one("models", id, self._models_node)),
            "model": lambda _i, where=None, order_by=None: listed(
                map(self._model_node, self.registry.version_rows("1=1", ())), where, order_by),
            "model_by_pk": lambda _i, id: seen(self._model(id)),
            "orchestration_by_pk": lambda _i, id: seen(_maybe(self.orchestration(id), _orchestration_node)),
            "model_config_by_pk": lambda _i, id: seen(
                _maybe(self.registry.version_row("mv.id = ?", (id,)), self._config_node)),
            "pipeline": lambda _i, where=None, order_by=None: listed(
                map(self._pipeline_node, self.db.all("SELECT * FROM pipelines ORDER BY id")), where, order_by),
            "pipeline_by_pk": lambda _i, id: seen(self._one("pipelines", id, self._pipeline_node)),
            "pipeline_version": lambda _i, where=None, order_by=None: listed(
                map(self._version_node, self.db.all("SELECT * FROM pipeline_versions ORDER BY id")), where, order_by),
            "pipeline_version_by_pk": lambda _i, id: seen(self._one("pipeline_versions", id, self._version_node)),
            "deployment": lambda _i, where=None, order_by=None: listed(
                map(self._deployment_node, self.db.all("SELECT * FROM deployments ORDER BY id")), where, order_by),
            "deployment_by_pk": lambda _i, id: seen(self._one("deployments", id, self._deployment_node)),
        }

    def _one(self, table: str, pk: int, node: Callable[[dict[str, Any]], Node]) -> Node | None:
        return _maybe(self.db.one(f"SELECT * FROM {table} WHERE id = ?", (pk,)), node)

    # -- workspaces and models --------------------------------------------------------------
    def _workspace(self, workspace_id: int) -> Node | None:
        return self._one("workspaces", workspace_id, self._workspace_node)

    def _workspace_node(self, row: dict[str, Any]) -> Node:
        wid = row["id"]
        return {
            **answers.workspace(row), "_ws": wid, "owner_id": answers.OWNER, "users": [],
            "models": lambda _i, order_by=None: _filter(
                [self._models_node(r) for r in self.db.all("SELECT * FROM models WHERE workspace_id = ?", (wid,))],
                None, order_by),
            "pipelines": lambda _i, order_by=None: _filter(
                [self._pipeline_node(r) for r in self.db.all("SELECT * FROM pipelines WHERE workspace_id = ?", (wid,))],
                None, order_by),
        }

    def _models_node(self, row: dict[str, Any]) -> Node:
        versions = self.registry.version_rows("mv.model_id = ?", (row["id"],))
        return {
            **answers.model(row, versions[-1]["created_at"] if versions else None), "_ws": row["workspace_id"],
            "workspace": lambda _i: self._workspace(row["workspace_id"]),
            "models": lambda _i, order_by=None: _filter([self._model_node(v) for v in versions], None, order_by),
        }

    def _model(self, model_version_id: int) -> Node | None:
        return _maybe(self.registry.version_row("mv.id = ?", (model_version_id,)), self._model_node)

    def _model_node(self, row: dict[str, Any]) -> Node:
        conversion = json.loads(row["conversion"])
        return {
            "_ws": row["workspace_id"],
            "id": row["id"], "model_id": row["name"], "model_version": row["version"], "models_pk_id": row["model_id"],
            "sha": row["sha"], "status": row["status"], "error_summary": None, "file_name": row["file_name"],
            "file_size": row["file_size"], "image_path": None, "visibility": row["visibility"],
            "created_at": answers.iso(row["created_at"]), "updated_at": answers.iso(row["created_at"]),
            "created_on_version": None, "model_tags": [],
            "conversion": lambda _i, path=None: conversion if path is None else conversion.get(path),
            "model": lambda _i: self._one("models", row["model_id"], self._models_node),
            "configs": lambda _i: [self._config_node(row)],
        }

    def _config_node(self, row: dict[str, Any]) -> Node:
        return {**answers.model_config(row), "_ws": row["workspace_id"], "model": lambda _i: self._model_node(row)}

    # -- pipelines and deployments ------------------------------------------------------------
    def _pipeline_node(self, row: dict[str, Any]) -> Node:
        pid = row["id"]
        versions = self.db.all("SELECT * FROM pipeline_versions WHERE pipeline_id = ? ORDER BY id", (pid,))
        dep = self.deployments.row(pid)
        updated = max([v["created_at"] for v in versions] + [dep["updated_at"] if dep else row["created_at"]])
        return {
            **answers.pipeline(row, updated), "_ws": row["workspace_id"], "pipeline_id": row["name"], "owner_id": answers.OWNER,
            "visibility": "private", "workspace_id": row["workspace_id"], "pipeline_tags": [],
            "pipeline_versions": lambda _i, order_by=None, limit=None: _filter(
                [self._version_node(v) for v in versions], None, order_by)[:limit],
            "workspace": lambda _i: self._workspace(row["workspace_id"]),
            "deployment": lambda _i: _maybe(dep, self._deployment_node),
        }

    def _version_node(self, row: dict[str, Any]) -> Node:
        dep = self.deployments.row(row["pipeline_id"])
        deployed_here = dep is not None and dep["pipeline_version_id"] == row["id"]
        pipeline = self.db.one("SELECT workspace_id FROM pipelines WHERE id = ?", (row["pipeline_id"],))
        return {
            "_ws": pipeline["workspace_id"] if pipeline else None, "id": row["id"], "pipeline_id": row["pipeline_id"],
            "version": row["version"],
            "definition": json.loads(row["definition"]), "created_at": answers.iso(row["created_at"]),
            "updated_at": answers.iso(row["created_at"]), "created_on_version": None, "pipeline_publishes": [],
            "pipeline": lambda _i: self._one("pipelines", row["pipeline_id"], self._pipeline_node),
            "deployment_pipeline_versions": lambda _i: [self._deployed_version(dep)] if deployed_here else [],
            "deployment_model_configs": lambda _i: self._deployment_configs(dep) if deployed_here else [],
        }

    def _deployment_node(self, dep: dict[str, Any]) -> Node:
        pipeline = self.db.one("SELECT * FROM pipelines WHERE id = ?", (dep["pipeline_id"],))
        return {
            "_ws": pipeline["workspace_id"] if pipeline else None,
            "id": dep["id"], "deploy_id": pipeline["name"] if pipeline else dep["deploy_name"],
            "deployed": dep["desired"] == "deployed", "limit_status": None, "pipeline_id": dep["pipeline_id"],
            "created_at": answers.iso(dep["created_at"]), "updated_at": answers.iso(dep["updated_at"]),
            "engine_config": lambda _i: self.deployments.wire_config(dep),
            "pipeline": lambda _i: _maybe(pipeline, self._pipeline_node),
            "deployment_model_configs": lambda _i: self._deployment_configs(dep),
            "deployment_pipeline_versions": lambda _i, order_by=None: [self._deployed_version(dep)],
        }

    def _deployed_version(self, dep: dict[str, Any]) -> Node:
        return {
            "id": dep["id"], "deployment_id": dep["id"], "pipeline_version_pk_id": dep["pipeline_version_id"],
            "created_at": answers.iso(dep["created_at"]), "updated_at": answers.iso(dep["updated_at"]),
            "deployment": lambda _i: self._deployment_node(dep),
            "pipeline_version": lambda _i: self._one("pipeline_versions", dep["pipeline_version_id"], self._version_node),
        }

    def _deployment_configs(self, dep: dict[str, Any]) -> list[Node]:
        version = self.pipelines.version(dep["pipeline_version_id"])
        out = []
        for ref in step_refs(json.loads(version["definition"])) if version else []:
            row = self.registry.version_row("m.name = ? AND mv.version = ?", (ref["name"], ref["version"]))
            if row is not None:
                out.append({"id": row["id"], "deployment_id": dep["id"], "model_config_id": row["id"],
                            "model_config": self._config_node(row)})
        return out


def _mutates(query: str) -> bool:
    try:
        document = parse(query)
    except GraphQLError:
        return False  # graphql_sync answers the syntax error
    return any(isinstance(d, OperationDefinitionNode) and d.operation is OperationType.MUTATION
               for d in document.definitions)


# -- Hasura's where / order_by, for the columns the schema lists --------------------------------
def _orchestration_node(view: Node) -> Node:
    return {**view, "_ws": view["workspace_id"]}


def _maybe(row: dict[str, Any] | None, node: Callable[[dict[str, Any]], Node]) -> Node | None:
    return None if row is None else node(row)


def _eq(where: dict[str, Any] | None, column: str) -> Any:
    return ((where or {}).get(column) or {}).get("_eq")


def _matches(node: Node, where: dict[str, Any] | None) -> bool:
    """Hasura's where: every column's test holds, and each clause of `_and`."""
    return all(all(_matches(node, clause) for clause in test) if column == "_and" else _test(node.get(column), test)
               for column, test in (where or {}).items())


def _filter(nodes: Iterable[Node], where: dict[str, Any] | None, order_by: Any) -> list[Node]:
    out = [n for n in nodes if _matches(n, where)]
    for order in reversed(order_by if isinstance(order_by, list) else [order_by] if order_by else []):
        for column, direction in reversed(list(order.items())):
            if isinstance(direction, str):
                out.sort(key=lambda n, c=column: (n.get(c) is None, n.get(c)), reverse=direction.startswith("desc"))
    return out


def _test(value: Any, test: dict[str, Any]) -> bool:
    if "_eq" in test and value != test["_eq"]:
        return False
    return not ("_in" in test and value not in test["_in"])
