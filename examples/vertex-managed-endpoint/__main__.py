"""A Vertex AI online-prediction endpoint behind one governed, logged, monitored endpoint.

Pipeline `[llm, validator]`: the Vertex BYOP adapter (service-account credentials, token
refreshed only when expired), then the in-line validator's scores. Every inference is logged.

Config (see README.md):
  vertex_credentials  secret  the service-account key JSON
  vertex_endpoint_url         https://{region}-aiplatform.googleapis.com/v1/projects/{p}/locations/{region}/endpoints/{id}
  max_tokens, max_concurrency optional
  data_dir                    where the local runtime keeps its data (when wallaroo:url is unset)
"""

import pulumi

from wallaroo_pulumi import (
    BYOP_DIR,
    LLM_INPUT_SCHEMA,
    LLM_OUTPUT_SCHEMA,
    DeploymentConfigBuilder,
    WallarooModel,
    WallarooPipeline,
    curl_command,
    listener_schemas,
    local_or_configured,
)

cfg = pulumi.Config()
conn = local_or_configured("runtime", data_dir=cfg.get("data_dir") or ".state/vertex-example/runtime")

llm = WallarooModel("vertex-llm", path=BYOP_DIR / "vertex_llm", input_schema=LLM_INPUT_SCHEMA,
                    output_schema=LLM_OUTPUT_SCHEMA, connection=conn)
validator_in, validator_out = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
validator = WallarooModel("validator", path=BYOP_DIR / "listeners" / "validator", input_schema=validator_in,
                          output_schema=validator_out, connection=conn)

deployment = (
    DeploymentConfigBuilder()
    .cpus(1).memory("1Gi").replica_count(1)
    .sidekick_cpus(llm, 0.5).sidekick_memory(llm, "1Gi")
    .sidekick_env(llm, {
        "APPLICATION_CREDENTIALS": cfg.require_secret("vertex_credentials"),
        "VERTEX_ENDPOINT_URL": cfg.require("vertex_endpoint_url"),
        "MAX_TOKENS": cfg.get("max_tokens") or "256",
        "MAX_CONCURRENCY": cfg.get("max_concurrency") or "8",
    })
    .sidekick_cpus(validator, 1).sidekick_memory(validator, "2Gi")
    .build()
)
pipeline = WallarooPipeline("vertex-chat", steps=[llm, validator], deployment=deployment, connection=conn)

pulumi.export("inference_url", pipeline.inference_url)
pulumi.export("curl", curl_command(pipeline.inference_url))
if conn is not None:
    pulumi.export("token", conn.token)
