"""`LocalRuntime`: the bundled runtime as a background process owned by the stack (D17)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.resources.connection import Connection
from wallaroo_pulumi.resources.progress import report


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: float | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)  # Pulumi hands numbers back as floats
    except OSError:
        return False
    return True


class _ProcessProvider(ResourceProvider):
    """Owns one runtime process; its pid and port live in the stack state."""

    def _start(self, props: dict[str, Any], port: int | None = None) -> dict[str, Any]:
        data_dir = Path(props["data_dir"])
        data_dir.mkdir(parents=True, exist_ok=True)
        port = int(port or props.get("port") or 0) or free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(data_dir / "runtime.log", "ab")
        cmd = [props.get("python") or sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "serve",
               "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(data_dir))
        (data_dir / "runtime.pid").write_text(str(proc.pid))
        report(f"LocalRuntime: starting runtime (pid {proc.pid}) at {url}, data in {data_dir}")
        deadline = time.monotonic() + float(props.get("start_timeout_s") or 60)
        while not _healthy(url):
            if proc.poll() is not None:
                tail = (data_dir / "runtime.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the runtime exited with code {proc.returncode} while starting; "
                                   f"last lines of {data_dir / 'runtime.log'}:\n{tail}")
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"the runtime did not answer {url}/health within the start timeout; "
                                   f"see {data_dir / 'runtime.log'}")
            time.sleep(0.2)
        token = (data_dir / "admin.token").read_text().strip()
        return {**props, "port": port, "url": url, "token": token, "pid": proc.pid, "running": True}

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._start(props)
        return CreateResult(f"local-runtime-{outs['port']}", outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A runtime that died since the last `up` shows as a change, so `up` starts it again.
        died = not (_alive(olds.get("pid")) and _healthy(olds.get("url") or ""))
        moved = olds.get("data_dir") != news.get("data_dir")
        return DiffResult(changes=died or moved, replaces=["data_dir"] if moved else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _stop(olds.get("pid"))
        return UpdateResult(self._start(news, port=olds.get("port")))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        running = _alive(props.get("pid")) and _healthy(props.get("url") or "")
        return ReadResult(id_, {**props, "running": running})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _stop(props.get("pid"))
        if not props.get("keep_data", True):
            shutil.rmtree(props["data_dir"], ignore_errors=True)


def _stop(pid: float | None, grace_s: float = 10) -> None:
    if not _alive(pid):
        return
    assert pid is not None
    pid = int(pid)
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


class _RuntimeProcess(Resource, module="wallaroo", name="LocalRuntimeProcess"):
    url: pulumi.Output[str]
    token: pulumi.Output[str]
    pid: pulumi.Output[int]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(_ProcessProvider(), name, {**props, "url": None, "token": None, "pid": None,
                                                    "running": None}, opts)


class LocalRuntime(pulumi.ComponentResource):
    """The bundled runtime on this machine. Outputs: `url`, `token` (secret), `connection`.

    `data_dir` holds everything (SQLite metadata, artifacts, inference logs, the
    admin token). It is kept on destroy unless `keep_data=False`.
    """

    def __init__(self, name: str, *, data_dir: str | Path, port: int = 0, keep_data: bool = True,
                 start_timeout_s: float = 60, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("wallaroo:index:LocalRuntime", name, None, opts)
        process = _RuntimeProcess(
            f"{name}-process",
            {"data_dir": str(Path(data_dir).expanduser().resolve()), "port": port, "keep_data": keep_data,
             "start_timeout_s": start_timeout_s, "python": sys.executable},
            pulumi.ResourceOptions(parent=self, additional_secret_outputs=["token"]),
        )
        self.url: pulumi.Output[str] = process.url
        self.token: pulumi.Output[str] = pulumi.Output.secret(process.token)
        self.connection = Connection(url=self.url, token=self.token)
        self.register_outputs({"url": self.url})


def local_or_configured(name: str, *, data_dir: str | Path, **kwargs: Any) -> Connection | None:
    """A `LocalRuntime`'s connection, or None when `wallaroo:url` or `WALLAROO_URL` already points at a runtime (D17)."""
    if pulumi.Config("wallaroo").get("url") or os.environ.get("WALLAROO_URL"):
        return None
    return LocalRuntime(name, data_dir=data_dir, **kwargs).connection
