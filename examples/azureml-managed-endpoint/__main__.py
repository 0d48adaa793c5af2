"""An Azure OpenAI deployment or an Azure ML online endpoint behind one governed, logged,
monitored endpoint.

Pipeline `[llm, validator]`: the Azure BYOP adapter, then the in-line validator's scores.
`azure_mode` picks the upstream:
  openai  Azure OpenAI: `api-key` header, `api-version` query
          config: azure_openai_endpoint, azure_openai_deployment, azure_openai_api_key (secret),
                  azure_openai_api_version (optional)
  ml      Azure ML online endpoint: `Authorization: Bearer <key>` to the score URL
          config: azureml_score_url, azureml_api_key (secret), azureml_deployment (optional)
Also: max_tokens, max_concurrency, system_prompt, data_dir (see README.md).
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
conn = local_or_configured("runtime", data_dir=cfg.get("data_dir") or ".state/azure-example/runtime")

llm = WallarooModel("azure-llm", path=BYOP_DIR / "azure_llm", input_schema=LLM_INPUT_SCHEMA,
                    output_schema=LLM_OUTPUT_SCHEMA, connection=conn)
validator_in, validator_out = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
validator = WallarooModel("validator", path=BYOP_DIR / "listeners" / "validator", input_schema=validator_in,
                          output_schema=validator_out, connection=conn)

mode = cfg.get("azure_mode") or "openai"
if mode == "openai":
    env = {
        "AZURE_MODE": "openai",
        "AZURE_OPENAI_ENDPOINT": cfg.require("azure_openai_endpoint"),
        "AZURE_OPENAI_DEPLOYMENT": cfg.require("azure_openai_deployment"),
        "AZURE_OPENAI_API_KEY": cfg.require_secret("azure_openai_api_key"),
        "AZURE_OPENAI_API_VERSION": cfg.get("azure_openai_api_version") or "2024-10-21",
    }
elif mode == "ml":
    env = {
        "AZURE_MODE": "ml",
        "AZUREML_SCORE_URL": cfg.require("azureml_score_url"),
        "AZUREML_API_KEY": cfg.require_secret("azureml_api_key"),
    }
    if cfg.get("azureml_deployment"):
        env["AZUREML_DEPLOYMENT"] = cfg.get("azureml_deployment")
else:
    raise ValueError(f"azure_mode: expected 'openai' (Azure OpenAI) or 'ml' (Azure ML online endpoint), got {mode!r}")
env["MAX_TOKENS"] = cfg.get("max_tokens") or "256"
env["MAX_CONCURRENCY"] = cfg.get("max_concurrency") or "8"
if cfg.get("system_prompt"):
    env["SYSTEM_PROMPT"] = cfg.get("system_prompt")

deployment = (
    DeploymentConfigBuilder()
    .cpus(1).memory("1Gi").replica_count(1)
    .sidekick_cpus(llm, 0.5).sidekick_memory(llm, "1Gi").sidekick_env(llm, env)
    .sidekick_cpus(validator, 1).sidekick_memory(validator, "2Gi")
    .build()
)
pipeline = WallarooPipeline("azure-chat", steps=[llm, validator], deployment=deployment, connection=conn)

pulumi.export("inference_url", pipeline.inference_url)
pulumi.export("curl", curl_command(pipeline.inference_url))
if conn is not None:
    pulumi.export("token", conn.token)
