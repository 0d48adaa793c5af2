"""Fixtures: the REAL runtime as a subprocess (our CLI) on a free loopback port
with a tmp data dir, real sidekick processes and real BYOP zips."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.byop import byop_source
from wallaroo_pulumi.testing.processes import launch, log_tail, stop_process, wait_ready

REPO = Path(__file__).resolve().parents[2]

def make_zip(path: Path, files: dict[str, str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return path


def make_model(tmp: Path, name: str, predict_body: str, *, load_body: str = "", extra: dict | None = None) -> Path:
    return make_zip(tmp / f"{name}.zip", {"model.py": byop_source(predict_body, load_body=load_body), **(extra or {})})


def tiny_wheel(name: str, version: str, code: str) -> bytes:
    """A minimal pure-Python wheel, built by hand (no network, no build backend)."""
    import io
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: wallaroo-pulumi-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return buf.getvalue()


DOUBLE = 'return {"y": input_data["x"] * 2.0}'
X_SCHEMA = pa.schema([("x", pa.float64())])
Y_SCHEMA = pa.schema([("y", pa.float64())])


@dataclass
class Server:
    data_dir: Path
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    url: str = ""
    token: str = ""
    log_path: Path = field(default=Path("/dev/null"))
    prefix: list[str] = field(default_factory=list)  # e.g. a command that runs the runtime as another user

    def start(self, timeout: float = 30) -> Server:
        info = self.data_dir / "runtime.json"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-runtime.log"
        self.proc = launch(
            [*self.prefix, sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "serve", "--data-dir", str(self.data_dir),
             "--host", "127.0.0.1", "--port", "0", *self.args],
            log_path=self.log_path, env=self.env, cwd=str(REPO), info=info,
        )
        self.url = wait_ready(self.proc, info, self._healthy, timeout=timeout, what="runtime", log_path=self.log_path)
        return self

    def _healthy(self, url: str) -> bool:
        if httpx.get(url + "/health", timeout=2).status_code != 200:
            return False
        self.token = (self.data_dir / "admin.token").read_text().strip()
        return True

    def log_tail(self, n: int = 4000) -> str:
        return log_tail(self.log_path, n)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)

    def client(self, timeout: float = 60) -> WallarooClient:
        return WallarooClient(self.url, self.token, timeout=timeout)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["WALLAROO_TEST_SERVER_ONLY_SECRET"] = "server-secret-must-not-leak"
    return env


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory: make_server(name, *extra_cli_args) -> started Server (stopped at teardown)."""
    servers: list[Server] = []

    def factory(name: str = "data", *args: str, start: bool = True) -> Server:
        srv = Server(tmp_path / name, list(args), server_env())
        servers.append(srv)
        return srv.start() if start else srv

    yield factory
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One runtime shared by most tests: 20 MiB upload limit, 1 MiB request limit."""
    root = tmp_path_factory.mktemp("runtime")
    srv = Server(root / "data", ["--max-upload-bytes", "20Mi", "--max-request-bytes", "1Mi"], server_env())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[WallarooClient]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def double_pipeline(client: WallarooClient, models_dir: Path) -> str:
    """A deployed one-step pipeline 'double' (y = 2x), shared by the inference tests."""
    zip_path = make_model(models_dir, "double", DOUBLE)
    mv = client.upload_model("double", zip_path, X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("double-pipe", steps=[mv])
    dep = client.deploy("double-pipe", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    client.wait_for_deployment(f"double-pipe-{dep}", timeout_s=60)
    return "double-pipe"
