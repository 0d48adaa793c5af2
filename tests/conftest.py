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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test`), keep together the tests that share a server: a module's tests
    on one worker (its module-scoped runtime starts once), and the whole Kubernetes group on one
    worker (its package-scoped control plane starts once)."""
    for item in items:
        path = Path(str(item.path)).relative_to(Path(__file__).parent)
        group = "kubernetes" if path.parts[0] == "kubernetes" else path.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))
