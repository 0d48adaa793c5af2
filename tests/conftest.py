"""Shared fixtures: a real Pulumi stack on a throwaway file backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wallaroo_pulumi.testing.pulumi_stack import PulumiStack


@pytest.fixture
def pulumi_stack(tmp_path: Path) -> Iterator[PulumiStack]:
    """A fresh project + stack; destroyed at the end so no runtime state leaks between tests."""
    stack = PulumiStack(tmp_path / "project")
    yield stack
    if (stack.workdir / "__main__.py").exists() and stack._initialised:
        stack.destroy(check=False)
