"""Fixtures for the orchestration tests: a REAL runtime (our CLI, a subprocess) whose tasks run
sandboxed processes, and orchestration zips built from dicts of files."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest

from tests.runtime.conftest import Server, server_env
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.client.models import Orchestration


def zip_of(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def tiny_wheel(name: str = "tinydep", version: str = "1.0", value: str = "42") -> tuple[str, bytes]:
    """A real wheel (pip installs it) of one module whose VALUE is `value`."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    return f"{name}-{version}-py3-none-any.whl", zip_of(files)


@pytest.fixture(scope="module")
def orch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("orch") / "data", [], server_env()).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def orch_client(orch_server: Server) -> Iterator[WallarooClient]:
    with orch_server.client() as c:
        yield c


def upload(client: WallarooClient, files: dict[str, str | bytes] | bytes, name: str, wait: bool = True) -> Orchestration:
    orch = client.upload_orchestration(files if isinstance(files, bytes) else zip_of(files), f"{name}.zip", name=name)
    return client.wait_for_orchestration(orch.id) if wait else orch
