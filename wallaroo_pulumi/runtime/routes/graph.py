"""`POST /v1/graphql`: the GraphQL endpoint the Wallaroo SDK queries (introspection included)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from wallaroo_pulumi.runtime.routes import runtime_of

router = APIRouter(tags=["graphql"])


class GraphQLRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    query: str
    variables: dict[str, Any] | None = None
    operation_name: str | None = Field(default=None, alias="operationName")


@router.post("/v1/graphql", summary="Wallaroo's GraphQL (read-only subset: workspaces, models, pipelines, deployments)")
def graphql(request: Request, body: GraphQLRequest) -> dict:
    return runtime_of(request).graph.execute(body.query, body.variables, body.operation_name)
