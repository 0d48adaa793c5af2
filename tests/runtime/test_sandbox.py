"""A hostile BYOP model against the sidekick sandbox, through a REAL runtime, run as root and as a
non-root user (uid 10001, as in the image): from its `_predict`, and from the setup.py of a
package in its requirements.txt, it tries to read the data directory (database, WAL, keys,
tokens, logs, another model's folder), the runtime's and an honest neighbour's /proc files
(environ, memory, maps, fds, cwd, root), to ptrace and to kill them. Every attempt fails, the
honest neighbour keeps answering, and its credential is found in no other process."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from tests.runtime.conftest import DOUBLE, REPO, X_SCHEMA, Y_SCHEMA, Server, make_model, make_zip, server_env
from wallaroo_pulumi.client import DeploymentError
from wallaroo_pulumi.runtime.sandbox.support import Support
from wallaroo_pulumi.testing.byop import byop_source
from wallaroo_pulumi.testing.processes import process_tree

pytestmark = pytest.mark.security

#: What each test needs, skipped only where that is missing: the runtime as root confines with a uid
#: and a private root of its own per worker plus Landlock file rules (ABI 1); as uid 10001 (the
#: image's user), with Landlock alone, which needs signal scoping (ABI 6, Linux 6.12). Running the
#: runtime as another user needs root here.
SUPPORT = Support.detect()
AS_ROOT_MISSING = (Support(SUPPORT.landlock_abi, root=True, caps=SUPPORT.caps).missing if SUPPORT.root
                   else ["root (this case runs the runtime as root)"])
NON_ROOT_MISSING = Support(SUPPORT.landlock_abi, root=False).missing if SUPPORT.root else ["root, to start the runtime as uid 10001"]
needs_root = pytest.mark.skipif(not SUPPORT.root, reason="starts the runtime as another user (uid 10001): needs root")
needs_non_root_sandbox = pytest.mark.skipif(
    bool(NON_ROOT_MISSING), reason=f"a runtime run as uid 10001 here lacks: {'; '.join(NON_ROOT_MISSING)}")

HONEST_SECRET = f"honest-application-credentials-{uuid.uuid4().hex}"  # this run's own (others may run beside it)
NON_ROOT_UID = 10001

#: The attacks, as a module the hostile model imports and its setup.py runs. Each entry of
#: `probe()` is "denied: ..." or "ALLOWED: ..."; `controls()` is what a model must still be able to do.
PROBE = r'''
import ctypes
import json
import os
import signal
import socket


def attempt(fn):
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001
        return f"denied: {type(exc).__name__}: {exc}"
    return f"ALLOWED: {result!r}"[:300]


def _read(path):
    with open(path, "rb") as f:
        return f"{len(f.read())} bytes"


def _write(path):
    with open(path, "w") as f:
        return f.write("pwned")


def _ptrace(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, pid, 0, 0) != 0:  # PTRACE_ATTACH
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    libc.ptrace(17, pid, 0, 0)
    return "attached"


def _scan(secret):
    """Every /proc/<pid>/environ this process can read, searched for the neighbour's secret."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if secret.encode() in f.read():
                        found.append(pid)
            except OSError:
                pass
    if not found:
        raise PermissionError("the secret is in no environ this process can read")
    return found


def probe(runtime_pid, honest_pid, data_dir, honest_dir, secret):
    r = {}
    for name in ("runtime.db", "runtime.db-wal", "secrets.key", "admin.token", "runtime.json"):
        r[f"read data dir {name}"] = attempt(lambda n=name: _read(os.path.join(data_dir, n)))
    for sub in ("", "logs", "models", "artifacts", "deps"):
        r[f"list data dir {sub or '.'}"] = attempt(lambda s=sub: sorted(os.listdir(os.path.join(data_dir, s))))
    r["write data dir"] = attempt(lambda: _write(os.path.join(data_dir, "pwned")))
    r["read other model folder"] = attempt(lambda: _read(os.path.join(honest_dir, "model.py")))
    r["list other model folder"] = attempt(lambda: os.listdir(honest_dir))
    for who, pid in (("runtime", runtime_pid), ("neighbour", honest_pid)):
        for name in ("environ", "mem", "maps"):
            r[f"read {who} /proc/{name}"] = attempt(lambda p=pid, n=name: _read(f"/proc/{p}/{n}"))
        r[f"list {who} /proc/fd"] = attempt(lambda p=pid: os.listdir(f"/proc/{p}/fd"))
        r[f"open {who} /proc/fd/0"] = attempt(lambda p=pid: _read(f"/proc/{p}/fd/0"))
        r[f"readlink {who} /proc/cwd"] = attempt(lambda p=pid: os.readlink(f"/proc/{p}/cwd"))
        r[f"list {who} /proc/root"] = attempt(lambda p=pid: os.listdir(f"/proc/{p}/root/"))
        r[f"ptrace {who}"] = attempt(lambda p=pid: _ptrace(p))
    r["secret in any environ"] = attempt(lambda: _scan(secret))
    r["signal neighbour"] = attempt(lambda: os.kill(honest_pid, signal.SIGKILL))
    r["signal runtime"] = attempt(lambda: os.kill(runtime_pid, signal.SIGKILL))
    return r


def controls(runtime_port):
    """What the sandbox must leave: its own folder, its scratch, the network."""
    scratch = os.environ["TMPDIR"]
    return {
        "read own folder": attempt(lambda: _read("probe.py")),
        "write scratch": attempt(lambda: _write(os.path.join(scratch, "note"))),
        "network": attempt(lambda: socket.create_connection(("127.0.0.1", runtime_port), 5).close()),
    }
'''

HOSTILE_PREDICT = """
import probe
import evilpkg.results
row = {k: input_data[k][0] for k in ("runtime_pid", "honest_pid", "data_dir", "honest_dir", "secret", "port")}
found = probe.probe(int(row["runtime_pid"]), int(row["honest_pid"]), str(row["data_dir"]), str(row["honest_dir"]),
                    str(row["secret"]))
report = {"predict": found, "install": json.loads(evilpkg.results.RESULTS),
          "controls": probe.controls(int(row["port"]))}
return {"report": np.array([json.dumps(report)] * len(input_data["port"]))}
"""

SETUP_PY = """
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe

found = probe.probe(**{targets!r})
with open(os.path.join("evilpkg", "results.py"), "w") as out:
    out.write("RESULTS = " + repr(json.dumps(found)) + "\\n")
from setuptools import setup

setup(name="evilpkg", version="1.0", packages=["evilpkg"])
"""

TARGET_SCHEMA = pa.schema([("runtime_pid", pa.int64()), ("honest_pid", pa.int64()), ("data_dir", pa.string()),
                           ("honest_dir", pa.string()), ("secret", pa.string()), ("port", pa.int64())])
REPORT_SCHEMA = pa.schema([("report", pa.string())])


def _sdist(targets: dict) -> bytes:
    """evilpkg-1.0.tar.gz: its setup.py runs the probe when pip builds it."""
    files = {
        "evilpkg-1.0/setup.py": SETUP_PY.format(targets=targets),
        "evilpkg-1.0/probe.py": PROBE,
        "evilpkg-1.0/evilpkg/__init__.py": "",
        "evilpkg-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: evilpkg\nVersion: 1.0\n",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _descendants(pid: int, argv_part: str) -> list[int]:
    """The processes under ``pid`` (itself included) whose command line holds ``argv_part``."""
    found = []
    for p in process_tree(pid):
        try:
            if argv_part.encode() in Path(f"/proc/{p}/cmdline").read_bytes():
                found.append(p)
        except OSError:
            continue
    return found


def _workers(name: str, runtime: Server) -> list[tuple[int, str]]:
    """(pid, --model-dir) of the sidekick workers of step ``name`` under ``runtime``, read as root."""
    assert runtime.proc is not None
    found = []
    for pid in _descendants(runtime.proc.pid, "wallaroo_pulumi.runtime.sidekick.worker"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--name" in argv and name.encode() == argv[argv.index(b"--name") + 1]:
            found.append((pid, argv[argv.index(b"--model-dir") + 1].decode()))
    return found


def _holders(secret: str) -> list[int]:
    """Every process whose environ or argv holds ``secret``."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(secret.encode() in Path(f"/proc/{pid}/{name}").read_bytes() for name in ("environ", "cmdline")):
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def closed_on_the_way(paths: list[Path]) -> dict[Path, list[Path]]:
    """Each folder on the way to `paths` that other users cannot enter (no o+x: root's home, a
    `mktemp -d` folder, a pyenv under /root), outermost first, with its children on the way."""
    closed: dict[Path, list[Path]] = {}
    for path in paths:
        real = Path(os.path.realpath(path))
        chain = [*reversed(real.parents), real]
        for folder, child in zip(chain, chain[1:], strict=False):
            if not folder.stat().st_mode & 0o001 and child not in closed.setdefault(folder, []):
                closed[folder].append(child)
    return dict(sorted(closed.items(), key=lambda kv: len(kv[0].parts)))


def as_user(uid: int, scratch: Path) -> list[str]:
    """A command prefix running what follows as ``uid`` (no groups, no capabilities), able to reach
    what the runtime needs wherever it lies: the interpreter, the venv, this checkout (the package
    and its source), `scratch`. Each folder on the way that other users cannot enter is replaced,
    in a mount namespace of the prefix's own, by a tmpfs holding only the folders on the way (bound
    as they are), so the runtime and its sidekicks see the same paths, and nothing else of it."""
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
               "--bounding-set=-all", "--"]
    needs = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).parent, REPO, scratch]
    closed = closed_on_the_way(needs)
    if not closed:
        return setpriv
    steps = []
    for folder, children in closed.items():
        stage = tempfile.mkdtemp(prefix="stage-", dir=scratch)
        steps.append(f"mount -t tmpfs -o mode=0755 tmpfs {stage}")
        for child in children:
            kind = "mkdir -p" if child.is_dir() else "touch"
            steps += [f"{kind} {stage}/{child.name}", f"mount --bind {child} {stage}/{child.name}"]
        steps.append(f"mount --move {stage} {folder}")
    script = " && ".join([*steps, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *setpriv]


@pytest.fixture(params=["root", "non-root"])
def runtime(request: pytest.FixtureRequest) -> Iterator[Server]:
    missing = AS_ROOT_MISSING if request.param == "root" else NON_ROOT_MISSING
    if missing:
        pytest.skip(f"a runtime run as {request.param} here lacks: {'; '.join(missing)}")
    home = Path(tempfile.mkdtemp(prefix="sandbox-test-"))  # not under pytest's tmp (0700 root)
    env = server_env()
    env["PIP_NO_BUILD_ISOLATION"] = "0"  # pip builds evilpkg with the runtime's setuptools (pip reads "0" as off)
    prefix: list[str] = []
    if request.param == "non-root":
        os.chown(home, NON_ROOT_UID, NON_ROOT_UID)
        env["HOME"] = str(home)
        prefix = as_user(NON_ROOT_UID, home)
    srv = Server(home / "data", [], env, prefix=prefix)
    try:
        yield srv.start()
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_a_hostile_model_reads_nothing_and_its_neighbour_keeps_answering(runtime: Server, tmp_path: Path) -> None:
    health = httpx.get(runtime.url + "/health", timeout=10).json()["sidekick_sandbox"]
    assert health["state"] == "sandboxed" and health["missing"] == [], health
    with runtime.client(timeout=300) as client:
        honest = client.upload_model("honest", make_model(tmp_path, "honest", DOUBLE), X_SCHEMA, Y_SCHEMA)
        created = client.create_pipeline("honest-pipe", steps=[honest])
        config = {"sidekicks": {"honest": {"env": {"APPLICATION_CREDENTIALS": HONEST_SECRET}}}}
        dep = client.deploy("honest-pipe", pipeline_id=created.pipeline_id, engine_config=config)
        client.wait_for_deployment(f"honest-pipe-{dep}", timeout_s=120)
        assert client.infer("honest-pipe", pd.DataFrame({"x": [1.0]}))["out.y"].tolist() == [2.0]

        ((honest_pid, honest_dir),) = _workers("honest", runtime)
        assert runtime.proc is not None
        targets = {"runtime_pid": runtime.proc.pid, "honest_pid": honest_pid, "data_dir": str(runtime.data_dir),
                   "honest_dir": honest_dir, "secret": HONEST_SECRET}
        hostile_zip = make_zip(tmp_path / "hostile.zip", {
            "model.py": byop_source(HOSTILE_PREDICT), "probe.py": PROBE,
            "requirements.txt": "--no-index\n--find-links sdists\nevilpkg==1.0\n",
            "sdists/evilpkg-1.0.tar.gz": _sdist(targets),
        })
        hostile = client.upload_model("hostile", hostile_zip, TARGET_SCHEMA, REPORT_SCHEMA)
        created = client.create_pipeline("hostile-pipe", steps=[hostile])
        dep = client.deploy("hostile-pipe", pipeline_id=created.pipeline_id)
        client.wait_for_deployment(f"hostile-pipe-{dep}", timeout_s=300)
        port = int(runtime.url.rsplit(":", 1)[1])
        out = client.infer("hostile-pipe", pd.DataFrame([{**targets, "port": port}]))
        report = json.loads(out["out.report"][0])

        for stage in ("predict", "install"):
            allowed = {k: v for k, v in report[stage].items() if not v.startswith("denied")}
            assert not allowed, f"{stage}: {json.dumps(allowed, indent=1)}"
            assert {"read data dir secrets.key", "read neighbour /proc/environ", "ptrace runtime"} <= set(report[stage])
        denied = {k: v for k, v in report["controls"].items() if not v.startswith("ALLOWED")}
        assert not denied, denied
        assert HONEST_SECRET not in json.dumps(report)

        # the neighbour was neither killed nor restarted, and answers; the runtime too
        assert client.infer("honest-pipe", pd.DataFrame({"x": [3.0]}))["out.y"].tolist() == [6.0]
        assert _workers("honest", runtime) == [(honest_pid, honest_dir)]
        # its credential is in its own environ only: not in the runtime's, not on any argv, not in the log
        assert _holders(HONEST_SECRET) == [honest_pid]
        assert HONEST_SECRET not in runtime.log_tail(10**7)
        (hostile_pid, _), = _workers("hostile", runtime)
        uids = {pid: int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
                for pid in (runtime.proc.pid, honest_pid, hostile_pid)}
        if not runtime.prefix:  # as root: a uid of its own each, none of them root
            assert len(set(uids.values())) == 3 and uids[runtime.proc.pid] == 0, uids
        else:
            assert set(uids.values()) == {NON_ROOT_UID}, uids


@needs_root
def test_a_non_root_runtime_and_its_sidekicks_run_from_this_checkout_wherever_it_lies(tmp_path: Path) -> None:
    """The runtime as uid 10001 (the image's user), started from this checkout and venv even where
    they lie under a folder only root may enter, imports the package, says in /health what the
    kernel offers its sandbox, and (let run unconfined where it lacks a mechanism) starts a sidekick
    as that uid that answers. Needs no Landlock: the proof that runs everywhere."""
    home = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    os.chown(home, NON_ROOT_UID, NON_ROOT_UID)
    env = {**server_env(), "HOME": str(home)}
    lacks = NON_ROOT_MISSING
    srv = Server(home / "data", [] if not lacks else ["--insecure-sidekicks"], env, prefix=as_user(NON_ROOT_UID, home))
    try:
        srv.start()
        health = httpx.get(srv.url + "/health", timeout=10).json()["sidekick_sandbox"]
        assert (health["state"], health["missing"]) == (("insecure", lacks) if lacks else ("sandboxed", [])), health
        with srv.client() as client:
            mv = client.upload_model("double", make_model(tmp_path, "double", DOUBLE), X_SCHEMA, Y_SCHEMA)
            created = client.create_pipeline("double-pipe", steps=[mv])
            dep = client.deploy("double-pipe", pipeline_id=created.pipeline_id)
            client.wait_for_deployment(f"double-pipe-{dep}", timeout_s=120)
            assert client.infer("double-pipe", pd.DataFrame({"x": [2.0]}))["out.y"].tolist() == [4.0]
        ((worker, _),) = _workers("double", srv)
        assert srv.proc is not None
        assert _descendants(srv.proc.pid, "wallaroo_pulumi.cli") == [srv.proc.pid]
        for pid in (worker, srv.proc.pid):
            assert int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]) == NON_ROOT_UID, pid
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


@needs_non_root_sandbox
def test_a_runtime_that_cannot_hide_its_data_refuses_sidekicks_unless_insecure(tmp_path: Path) -> None:
    """As a non-root user, Landlock rules cannot take a data directory back out of a folder
    sidekicks read (here: inside our own package folder): the runtime says so at start and in
    /health (without the path), the deploy fails naming --insecure-sidekicks, and with that flag
    the model runs. (As root, a private root hides the data directory wherever it is.)"""
    import wallaroo_pulumi

    home = Path(wallaroo_pulumi.__file__).parent / f".sandbox-test-{os.getpid()}"
    home.mkdir()
    os.chown(home, NON_ROOT_UID, NON_ROOT_UID)
    env = {**server_env(), "HOME": str(home)}
    try:
        srv = Server(home / "data", [], env, prefix=as_user(NON_ROOT_UID, home)).start()
        try:
            health = httpx.get(srv.url + "/health", timeout=10).json()["sidekick_sandbox"]
            assert health["state"] == "refusing sidekicks", health
            assert health["missing"] == ["a data directory outside what sidekicks read"]
            assert str(home) not in json.dumps(health)
            assert "--insecure-sidekicks" in srv.log_tail() and f"data directory {home / 'data'} lies inside" in srv.log_tail()
            with srv.client() as client:
                mv = client.upload_model("double", make_model(tmp_path, "double", DOUBLE), X_SCHEMA, Y_SCHEMA)
                created = client.create_pipeline("double-pipe", steps=[mv])
                dep = client.deploy("double-pipe", pipeline_id=created.pipeline_id)
                with pytest.raises(DeploymentError) as err:
                    client.wait_for_deployment(f"double-pipe-{dep}", timeout_s=60)
                assert "not sandboxed" in str(err.value) and "--insecure-sidekicks" in str(err.value)
        finally:
            srv.stop()
        srv = Server(home / "data", ["--insecure-sidekicks"], env, prefix=as_user(NON_ROOT_UID, home)).start()
        try:
            assert httpx.get(srv.url + "/health", timeout=10).json()["sidekick_sandbox"]["state"] == "insecure"
            with srv.client() as client:
                client.wait_for_deployment(f"double-pipe-{dep}", timeout_s=60)
                assert client.infer("double-pipe", pd.DataFrame({"x": [2.0]}))["out.y"].tolist() == [4.0]
        finally:
            srv.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_launcher_refuses_to_run_what_it_could_not_confine(tmp_path: Path) -> None:
    """Nothing runs half confined: a policy the launcher cannot apply exits 126 with the reason."""
    import subprocess

    from wallaroo_pulumi.runtime.sandbox.policy import ENV_VAR, Policy

    marker = tmp_path / "ran"
    policy = Policy(cwd=str(tmp_path / "missing-folder"), landlock_abi=1)
    done = subprocess.run(
        [sys.executable, "-P", "-m", "wallaroo_pulumi.runtime.sandbox.confine", "--policy", policy.to_json(), "--",
         "/bin/sh", "-c", f"touch {marker}"],
        env={**server_env(), ENV_VAR: json.dumps({"PATH": os.defpath})}, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 126, done.stderr
    assert "sandbox: could not confine /bin/sh" in done.stderr and not marker.exists()
