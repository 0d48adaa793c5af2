"""Stand-in cloud servers on loopback for the adapter tests (real HTTP, real auth)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from wallaroo_pulumi.standins import AzureStandin, OpenAIStandin, VertexStandin

# Fast retries for tests; the values under test override these.
FAST_RETRY = {"RETRY_BACKOFF_S": "0.05", "RETRY_MAX_BACKOFF_S": "0.2"}


@pytest.fixture
def openai_server() -> Iterator[OpenAIStandin]:
    with OpenAIStandin() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def vertex_server() -> Iterator[VertexStandin]:
    with VertexStandin() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def azure_server() -> Iterator[AzureStandin]:
    with AzureStandin() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def service_account(vertex_server: VertexStandin) -> dict[str, Any]:
    """A throwaway service account whose public key the stand-in knows."""
    return vertex_server.create_service_account()
