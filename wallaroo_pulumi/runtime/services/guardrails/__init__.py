"""Guardrail policies of pipelines (D45): stored per pipeline, applied on each call."""
