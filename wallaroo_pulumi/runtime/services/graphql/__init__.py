"""`POST /v1/graphql`: the subset of Wallaroo's GraphQL schema the SDK's core flow and our
client read (`schema.graphql`), executed with graphql-core over the runtime's rows (D33)."""

from wallaroo_pulumi.runtime.services.graphql.graph import Graph

__all__ = ["Graph"]
