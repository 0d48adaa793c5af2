"""Ready-made Pulumi components and BYOP model folders (installed as `wallaroo_pulumi.components`)."""

from pathlib import Path

BYOP_DIR = Path(__file__).parent / "byop"
"""The ready BYOP model folders: `openai_llm`, `vertex_llm`, `azure_llm`, `listeners/<scorer>`."""
