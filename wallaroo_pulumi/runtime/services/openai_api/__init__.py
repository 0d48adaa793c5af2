"""OpenAI-compatible endpoints on pipelines whose first model's version has `openai_config`
enabled: `{inference url}/openai/v1/chat/completions` and `/completions`, streamed as server-sent
events when asked (D39)."""
