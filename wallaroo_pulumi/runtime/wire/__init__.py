"""The wire format: request and answer bodies (pandas-records, Arrow), the MLOps API answer shapes,
error bodies, the OpenAI shapes. Never imports services, the engine or routes."""
