"""wallaroo-pulumi: managed LLM inference endpoints as infrastructure code."""
