"""The services: registry, pipelines, deployments, inference, inference logs, keys and access,
listeners, GraphQL, the OpenAI endpoints, and `runtime.Runtime` which assembles them.
They call the engine and the stores; never routes or the app."""
