"""Shared fixtures: a real Pulumi stack on a throwaway file backend. And the CI rule: with
`CI=true`, a security or Kubernetes test that is skipped fails the run (a skipped proof proves
nothing), unless it is skipped only for hardware this machine lacks (`hardware` marker: a GPU),
which stays a skip and is listed at the end of the run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

HERE = Path(__file__).parent
#: Folders whose every test is a Kubernetes test (marked `kubernetes` at collection).
KUBERNETES = HERE / "kubernetes"
#: Markers whose tests may not be skipped in CI.
GUARDED = ("security", "kubernetes")
#: Hardware skips seen by this process (the xdist controller, or the only process).
_HARDWARE_SKIPS: list[str] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/kubernetes `kubernetes`. And for pytest-xdist (`make test`), keep
    together the tests that share a server: a module's tests on one worker (its module-scoped runtime
    starts once), the whole Kubernetes group on one worker (its package-scoped control plane starts once)."""
    for item in items:
        path = Path(str(item.path)).relative_to(HERE)
        if path.parts[0] == KUBERNETES.name:
            item.add_marker(pytest.mark.kubernetes)
            item.add_marker(pytest.mark.xdist_group("kubernetes"))
        else:
            item.add_marker(pytest.mark.xdist_group(path.as_posix()))


def _guarded(item: pytest.Item) -> str | None:
    return next((name for name in GUARDED if item.get_closest_marker(name) is not None), None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    kind = _guarded(item)
    if kind is None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if item.get_closest_marker("hardware") is not None:
        report.user_properties.append(("hardware_skip", reason))  # travels to the xdist controller
        return
    if in_ci():
        report.outcome = "failed"
        report.longrepr = (f"CI=true: this {kind} test was skipped, and in CI a skipped {kind} test fails the run "
                           f"(give the machine what it needs, or run without CI=true): {reason}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _HARDWARE_SKIPS.extend(f"{report.nodeid}: {reason}" for key, reason in report.user_properties if key == "hardware_skip")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    skips = _HARDWARE_SKIPS
    if skips:
        terminalreporter.section("security tests skipped for absent hardware (allowed in CI)")
        for line in skips:
            terminalreporter.line(line)


@pytest.fixture
def pulumi_stack(tmp_path: Path) -> Iterator[PulumiStack]:
    """A fresh project + stack; destroyed at the end so no runtime state leaks between tests."""
    stack = PulumiStack(tmp_path / "project")
    yield stack
    if (stack.workdir / "__main__.py").exists() and stack._initialised:
        stack.destroy(check=False)

