"""OpenAI (or any OpenAI-compatible server) behind one governed, logged, monitored endpoint.

Pipeline `[llm, validator]`: the OpenAI BYOP adapter, then the in-line validator that appends
toxicity / profanity / sentiment / hate scores to every answer. Every inference is logged.

Config (see README.md):
  openai_api_key   secret   the API key
  openai_model              default gpt-4o-mini
  openai_base_url           default https://api.openai.com/v1 (any OpenAI-compatible server)
  system_prompt, max_tokens, max_concurrency   optional
  data_dir                  where the local runtime keeps its data (when wallaroo:url is unset)
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
conn = local_or_configured("runtime", data_dir=cfg.get("data_dir") or ".state/openai-example/runtime")

llm = WallarooModel("openai-llm", path=BYOP_DIR / "openai_llm", input_schema=LLM_INPUT_SCHEMA,
                    output_schema=LLM_OUTPUT_SCHEMA, connection=conn)
validator_in, validator_out = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
validator = WallarooModel("validator", path=BYOP_DIR / "listeners" / "validator", input_schema=validator_in,
                          output_schema=validator_out, connection=conn)

env = {
    "OPENAI_API_KEY": cfg.require_secret("openai_api_key"),
    "OPENAI_MODEL": cfg.get("openai_model") or "gpt-4o-mini",
    "OPENAI_BASE_URL": cfg.get("openai_base_url") or "https://api.openai.com/v1",
    "MAX_TOKENS": cfg.get("max_tokens") or "256",
    "MAX_CONCURRENCY": cfg.get("max_concurrency") or "8",
}
if cfg.get("system_prompt"):
    env["SYSTEM_PROMPT"] = cfg.get("system_prompt")

deployment = (
    DeploymentConfigBuilder()
    .cpus(1).memory("1Gi").replica_count(1)
    .sidekick_cpus(llm, 0.5).sidekick_memory(llm, "1Gi").sidekick_env(llm, env)
    .sidekick_cpus(validator, 1).sidekick_memory(validator, "2Gi")
    .build()
)
pipeline = WallarooPipeline("openai-chat", steps=[llm, validator], deployment=deployment, connection=conn)

pulumi.export("inference_url", pipeline.inference_url)
pulumi.export("curl", curl_command(pipeline.inference_url))
if conn is not None:
    pulumi.export("token", conn.token)
