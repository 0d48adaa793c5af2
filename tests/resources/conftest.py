"""Stack tests for the provider resources: the real Pulumi engine drives our dynamic providers
against a real runtime (our CLI, a subprocess on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import Server, server_env
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.byop import byop_source
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack


def write_model(folder: Path, factor: float = 2.0, load: str = "") -> Path:
    """A BYOP model folder computing y = x * factor + len($SECRET_KEY): the credential's
    length, never its value, proves which one the sidekick got."""
    folder.mkdir(parents=True, exist_ok=True)
    predict = f'return {{"y": input_data["x"] * {factor} + len(os.environ.get("SECRET_KEY", ""))}}'
    (folder / "model.py").write_text(byop_source(predict, load_body=load))
    return folder


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("runtime") / "data", [], server_env())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def api(runtime: Server) -> Iterator[WallarooClient]:
    with runtime.client() as client:
        yield client


@pytest.fixture
def stack(pulumi_stack: PulumiStack, runtime: Server) -> PulumiStack:
    """A stack whose resources find the runtime through `wallaroo:url` / `wallaroo:token` config."""
    pulumi_stack.config_set("wallaroo:url", runtime.url)
    pulumi_stack.config_set("wallaroo:token", runtime.token, secret=True)
    return pulumi_stack


def plaintext_in_state(stack: PulumiStack, *secrets: str) -> list[str]:
    """Which of `secrets` appear in plaintext in `pulumi stack export`."""
    exported = stack.run("stack", "export").stdout
    return [s for s in secrets if s in exported]


def failure_text(result) -> str:  # noqa: ANN001 - a harness Result
    return " ".join(d.get("message", "") for d in result.diagnostics) + result.stdout + result.stderr


def changed(result) -> dict[str, str]:  # noqa: ANN001 - a harness Result
    """`{resource: op}` for our resources that change (the plan may omit unchanged ones)."""
    return {name: op for name, op in result.ops("wallaroo:").items() if op != "same"}
