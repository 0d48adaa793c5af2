"""The one orchestration the runtime runs: the built-in llm-listener, by name and by the id that
Wallaroo's task API carries as `orch_id` (a UUID on the wire)."""

ORCHESTRATION = "llm-listener"
ORCHESTRATION_ID = "ff68ccc8-dc87-50f4-9590-1c6763c33d9b"  # uuid5(NAMESPACE_URL, "wallaroo-pulumi:orchestration:llm-listener")
