"""A Vertex AI online-prediction endpoint behind one governed, logged, monitored endpoint.

Pipeline `[llm, validator]`: the Vertex BYOP adapter (service-account credentials, token
refreshed only when expired), then the in-line validator's scores. Every inference is logged.

Config (see README.md):
  vertex_credentials  secret  the service-account key JSON
  vertex_endpoint_url         https://{region}-aiplatform.googleapis.com/v1/projects/{p}/locations/{region}/endpoints/{id}
  max_tokens, max_concurrency optional
  data_dir                    where the local runtime keeps its data (when wallaroo:url is unset)
"""

from pathlib import Path

import pulumi

import wallaroo_pulumi.components as components
from wallaroo_pulumi import DeploymentConfigBuilder, WallarooModel, WallarooPipeline
from wallaroo_pulumi.adapters.schemas import LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA
from wallaroo_pulumi.components.local_runtime import local_or_configured
from wallaroo_pulumi.resources.pipeline import curl_command
from wallaroo_pulumi.scorers.schemas import listener_schemas

cfg = pulumi.Config()
byop = Path(components.__file__).parent / "byop"
conn = local_or_configured("runtime", data_dir=cfg.get("data_dir") or ".state/vertex-example/runtime")

llm = WallarooModel("vertex-llm", path=byop / "vertex_llm", input_schema=LLM_INPUT_SCHEMA,
                    output_schema=LLM_OUTPUT_SCHEMA, connection=conn)
validator_in, validator_out = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
validator = WallarooModel("validator", path=byop / "listeners" / "validator", input_schema=validator_in,
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
