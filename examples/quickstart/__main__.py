"""Quickstart: an LLM endpoint with in-line validation and a scheduled listener, on this machine.

- `LocalRuntime` starts the bundled runtime (data under .state/quickstart by default);
- `llm` is the OpenAI BYOP adapter, pointed at `openai_base_url` (the quickstart script
  serves a local OpenAI-compatible stand-in there; point it at the real API to go live);
- the pipeline `[llm, validator]` answers with the text and its toxicity/sentiment/hate scores,
  and holds an inference-only key for its endpoint (`inference_key`: it can infer, nothing else);
- `LLMListenerSchedule` scores the logged answers offline every 10 minutes.

Config: `openai_base_url`, `openai_api_key` (secret), optional `openai_model`, `data_dir`.
"""

import pulumi

from wallaroo_pulumi import (
    BYOP_DIR,
    LLM_INPUT_SCHEMA,
    LLM_OUTPUT_SCHEMA,
    DeploymentConfigBuilder,
    LLMListenerSchedule,
    LocalRuntime,
    WallarooModel,
    WallarooPipeline,
    listener_schemas,
)

config = pulumi.Config()

runtime = LocalRuntime("runtime", data_dir=config.get("data_dir") or ".state/quickstart/runtime")
conn = runtime.connection

llm = WallarooModel("llm", path=BYOP_DIR / "openai_llm", input_schema=LLM_INPUT_SCHEMA,
                    output_schema=LLM_OUTPUT_SCHEMA, connection=conn)
validator_in, validator_out = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
validator = WallarooModel("validator", path=BYOP_DIR / "listeners" / "validator",
                          input_schema=validator_in, output_schema=validator_out, connection=conn)
listener_in, listener_out = listener_schemas("combined")
listener = WallarooModel("llm-listener", path=BYOP_DIR / "listeners" / "combined",
                         input_schema=listener_in, output_schema=listener_out, connection=conn)

deployment = (
    DeploymentConfigBuilder()
    .cpus(1).memory("1Gi").replica_count(1)
    .sidekick_cpus(llm, 0.5).sidekick_memory(llm, "1Gi")
    .sidekick_env(llm, {
        "OPENAI_BASE_URL": config.require("openai_base_url"),
        "OPENAI_API_KEY": config.require_secret("openai_api_key"),
        "OPENAI_MODEL": config.get("openai_model") or "gpt-4o-mini",
    })
    .sidekick_cpus(validator, 1).sidekick_memory(validator, "2Gi")
    .build()
)
pipeline = WallarooPipeline("llm-pipeline", steps=[llm, validator], deployment=deployment, connection=conn,
                            inference_key=True)

schedule = LLMListenerSchedule("llm-listener-schedule", pipeline=pipeline, listener=listener,
                               schedule="*/10 * * * *", window_seconds=24 * 3600, connection=conn,
                               opts=pulumi.ResourceOptions(depends_on=[pipeline]))

pulumi.export("runtime_url", runtime.url)
pulumi.export("inference_url", pipeline.inference_url)
pulumi.export("pipeline_version", pipeline.version)
pulumi.export("listener_task_id", schedule.task_id)
pulumi.export("curl", pipeline.inference_url.apply(
    lambda url: f"curl -s -X POST {url} -H \"Authorization: Bearer $(pulumi stack output inference_key --show-secrets)\" "
                "-H 'Content-Type: application/json; format=pandas-records' "
                "--data '[{\"text\": \"Summarise why the sky is blue.\"}]'"))
pulumi.export("inference_key", pipeline.inference_key)
pulumi.export("token", runtime.token)  # the admin token: for the listener and management calls only
