"""Local stand-ins for the external LLM clouds (Vertex AI, OpenAI, Azure), for tests and benchmarks (D18).

Real HTTP servers on 127.0.0.1 speaking each cloud's wire protocol and auth, with fault
injection and request counters. Standalone: ``python -m wallaroo_pulumi.standins {openai,vertex,azure}``.
"""

from wallaroo_pulumi.standins.azure_server import DEFAULT_AZURE_OPENAI_KEY, DEFAULT_AZUREML_KEY, AzureStandin
from wallaroo_pulumi.standins.base import Faults, StandinServer, Stats, echo_answer
from wallaroo_pulumi.standins.openai_server import DEFAULT_API_KEY, DEFAULT_MODEL, OpenAIStandin
from wallaroo_pulumi.standins.vertex_server import VertexStandin, generate_service_account

__all__ = [
    "AzureStandin",
    "DEFAULT_API_KEY",
    "DEFAULT_AZUREML_KEY",
    "DEFAULT_AZURE_OPENAI_KEY",
    "DEFAULT_MODEL",
    "Faults",
    "OpenAIStandin",
    "StandinServer",
    "Stats",
    "VertexStandin",
    "echo_answer",
    "generate_service_account",
]
