"""`LocalRuntime`: the bundled runtime as a background process owned by the stack (D17)."""

from __future__ import annotations

import contextlib
import json
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
from wallaroo_pulumi.resources._base import reveal
from wallaroo_pulumi.resources.connection import Connection
from wallaroo_pulumi.resources.progress import report


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: float | None) -> bool:
    """The process exists and has not exited (an exited one its parent has not reaped yet is dead)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)  # Pulumi hands numbers back as floats
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all there is
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


DEFAULT_DATA_DIR = "~/.wallaroo-pulumi"  # the CLI's default --data-dir


def _argv(pid: int) -> list[str] | None:
    """A process's command line (None if it is gone or not ours to read)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        if Path("/proc/self").exists():
            return None
        try:  # no /proc (macOS): ps, whose words are split on spaces
            out = subprocess.run(["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.split() if out.returncode == 0 and out.stdout.strip() else None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a] or None


def _served_data_dir(pid: int) -> Path | None:
    """The data dir that process ``pid`` serves, if it is a `wallaroo-pulumi runtime serve`."""
    argv = _argv(pid)
    if not argv:
        return None
    cli = any(a == "wallaroo_pulumi.cli" or os.path.basename(a) == "wallaroo-pulumi" for a in argv)
    try:
        at = argv.index("runtime")
    except ValueError:
        return None
    if not cli or argv[at + 1:at + 2] != ["serve"]:
        return None
    data_dir = DEFAULT_DATA_DIR
    for i, arg in enumerate(argv):
        if arg == "--data-dir" and i + 1 < len(argv):
            data_dir = argv[i + 1]
        elif arg.startswith("--data-dir="):
            data_dir = arg.split("=", 1)[1]
    path = Path(data_dir).expanduser()
    if not path.is_absolute():  # relative to where it was started
        try:
            path = Path(os.readlink(f"/proc/{pid}/cwd")) / path
        except OSError:
            return None
    return Path(os.path.realpath(path))


def _pids() -> list[int]:
    """Every process this user may see."""
    if Path("/proc/self").exists():
        return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
    try:
        out = subprocess.run(["ps", "-ax", "-o", "pid="], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(w) for w in out.stdout.split() if w.isdigit()]


def find_runtimes(data_dir: str | Path, *known: float | None) -> list[int]:
    """The runtime processes serving ``data_dir``, found by what they serve, not by a recorded pid:
    the pid in its ``runtime.json`` (written by whichever runtime serves it now, e.g. one restarted
    by hand on the same port), the ``known`` pids (the stack's state), and any other
    `wallaroo-pulumi runtime serve` of this data dir. Each is checked: its command line must be
    ``runtime serve`` of this very data dir, so a reused pid is never taken for it."""
    target = Path(os.path.realpath(Path(data_dir).expanduser()))
    candidates: list[int] = [int(p) for p in known if p]
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        candidates.append(int(json.loads((target / "runtime.json").read_text())["pid"]))
    with contextlib.suppress(OSError, ValueError):
        candidates.append(int((target / "runtime.pid").read_text().strip()))
    candidates += _pids()
    found: list[int] = []
    for pid in dict.fromkeys(candidates):
        if pid != os.getpid() and pid not in found and _alive(pid) and _served_data_dir(pid) == target:
            found.append(pid)
    return found


def _serving_url(data_dir: str | Path) -> str | None:
    """The URL in the data dir's ``runtime.json`` (the runtime serving it now), if any."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return str(json.loads((Path(data_dir).expanduser() / "runtime.json").read_text())["url"])
    return None


def _running(props: dict[str, Any]) -> bool:
    """A runtime serves the stack's data dir and answers at the stack's URL."""
    data_dir = props.get("data_dir")
    if not data_dir:
        return _alive(props.get("pid")) and _healthy(props.get("url") or "")
    url = props.get("url") or ""
    return bool(find_runtimes(data_dir, props.get("pid"))) and _healthy(url) and _serving_url(data_dir) in (url, None)


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
        env = dict(os.environ)
        publish = props.get("publish")
        if publish:  # the registry's credentials through the environment, never the command line
            cmd += ["--publish-registry", publish["registry"], "--publish-base-image", publish["base_image"],
                    *(["--publish-insecure"] if publish.get("insecure") else [])]
            env.update({k: str(reveal(v)) for k, v in (("WALLAROO_OCI_USERNAME", publish.get("username")),
                                                        ("WALLAROO_OCI_PASSWORD", publish.get("password"))) if v})
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(data_dir), env=env)
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
        died = not _running(olds)
        moved = olds.get("data_dir") != news.get("data_dir")
        republish = reveal(olds.get("publish")) != reveal(news.get("publish"))  # restarted with the new registry
        return DiffResult(changes=died or moved or republish, replaces=["data_dir"] if moved else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _stop_all(olds.get("data_dir"), olds.get("pid"))
        return UpdateResult(self._start(news, port=olds.get("port")))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        running = _running(props)
        return ReadResult(id_, {**props, "running": running})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _stop_all(props.get("data_dir"), props.get("pid"))
        if not props.get("keep_data", True):
            shutil.rmtree(props["data_dir"], ignore_errors=True)


def _stop_all(data_dir: str | None, pid: float | None) -> None:
    """Stop every runtime serving ``data_dir`` (the one the stack started, or one restarted by hand);
    without a data dir, the recorded pid only."""
    pids = find_runtimes(data_dir, pid) if data_dir else ([int(pid)] if _alive(pid) else [])
    for found in pids:
        report(f"LocalRuntime: stopping the runtime serving {data_dir} (pid {found})")
        _stop(found)


def _stop(pid: float | None, grace_s: float = 10) -> None:
    """SIGTERM the runtime (its whole process group when it leads one), SIGKILL after ``grace_s``."""
    if not _alive(pid):
        return
    assert pid is not None
    pid = int(pid)

    def signal_it(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            try:
                leads = os.getpgid(pid) == pid
            except ProcessLookupError:
                return
            if leads:
                os.killpg(pid, sig)
            else:  # started by hand from a shell script: not a group of its own
                os.kill(pid, sig)

    signal_it(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid):
        signal_it(signal.SIGKILL)


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
    admin token). It is kept on destroy unless `keep_data=False`. With `publish_registry` and
    `publish_base_image` it publishes pipelines there (`WallarooPublish`), logging in with
    `publish_username` / `publish_password` (secret); `publish_insecure`: plain HTTP.
    """

    def __init__(self, name: str, *, data_dir: str | Path, port: int = 0, keep_data: bool = True,
                 start_timeout_s: float = 60, publish_registry: str | None = None,
                 publish_base_image: str | None = None, publish_username: pulumi.Input[str] | None = None,
                 publish_password: pulumi.Input[str] | None = None, publish_insecure: bool = False,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("wallaroo:index:LocalRuntime", name, None, opts)
        if (publish_registry is None) != (publish_base_image is None):
            raise ValueError(f"LocalRuntime {name}: publish_registry and publish_base_image go together")
        publish = None if publish_registry is None else {
            "registry": publish_registry, "base_image": publish_base_image, "username": publish_username,
            "password": pulumi.Output.secret(publish_password) if publish_password is not None else None,
            "insecure": publish_insecure}
        process = _RuntimeProcess(
            f"{name}-process",
            {"data_dir": str(Path(data_dir).expanduser().resolve()), "port": port, "keep_data": keep_data,
             "start_timeout_s": start_timeout_s, "python": sys.executable, "publish": publish},
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
