"""A hostile BYOP model against its resource limits, through a REAL runtime with real sandboxed
sidekick processes (issue 28). As root the kernel holds each limit (cgroups of the worker's own,
asserted by reading them from /proc and /sys, not from what the runtime says): the model cannot
widen its CPU set, is throttled past its CPU quota, cannot start more processes than its pids
limit, cannot write past its scratch size, is killed past its memory by the kernel; an honest
neighbour keeps answering within a stated bound meanwhile. Without root, /health says which limits
hold and rlimits stand in (process count, file size)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, Server, make_model, server_env
from tests.runtime.test_sandbox import NON_ROOT_UID, as_user
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.runtime.sandbox.support import SIGNAL_SCOPE_ABI, Support

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runs the runtime as root and as another user"),
    pytest.mark.skipif(Support.detect().landlock_abi < SIGNAL_SCOPE_ABI,
                       reason=f"the kernel has no Landlock ABI {SIGNAL_SCOPE_ABI}: the runtime refuses sidekicks"),
    pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/pids") and not os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
                       reason="no cgroup filesystem"),
]

SCRATCH = "16Mi"
MAX_PROCESSES = 40
MEMORY = "256Mi"
CPUS = 0.2
#: An honest neighbour's request, while the hostile model spins, forks and fills its scratch: the
#: bound this test states (the machine is shared and noisy, so it is generous; unbounded CPU use by
#: the hostile model on every core is what it guards against).
NEIGHBOUR_BOUND_S = 5.0

HOSTILE = r'''
import ctypes, errno, signal, threading, time
action = str(input_data["action"][0])
arg = float(input_data["arg"][0])
out = {}
if action == "affinity":
    before = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 64))
        out["set"] = "ok"
    except OSError as exc:
        out["set"] = f"{type(exc).__name__}: {exc}"
    with open("/proc/self/status") as f:
        out["status"] = [l.split(":", 1)[1].strip() for l in f if l.startswith("Cpus_allowed_list")][0]
    out.update(before=before, after=sorted(os.sched_getaffinity(0)), pid=os.getpid())
elif action == "spin":
    def spin():
        end = time.monotonic() + arg
        while time.monotonic() < end:
            pass
    threads = [threading.Thread(target=spin) for _ in range(4)]
    start_cpu = time.process_time()
    for t in threads: t.start()
    for t in threads: t.join()
    out["cpu_s"] = time.process_time() - start_cpu
elif action == "fork":
    children, error = [], ""
    for _ in range(int(arg)):
        try:
            pid = os.fork()
        except OSError as exc:
            error = errno.errorcode.get(exc.errno, str(exc.errno))
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    out.update(started=len(children), error=error)
elif action == "fill":
    path = os.path.join(os.environ["TMPDIR"], "fill")
    written = 0
    try:
        with open(path, "wb") as f:
            while written < arg * 2**20:
                f.write(b"x" * 2**20)
                f.flush()
                os.fsync(f.fileno())
                written += 2**20
    finally:
        out["written"] = written
        if os.path.exists(path):
            os.unlink(path)
elif action == "memory":
    hog = bytearray(int(arg) * 2**20)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    out["held"] = len(hog)
return {"report": np.array([json.dumps(out)] * len(input_data["action"]))}
'''
ACTION_SCHEMA = pa.schema([("action", pa.string()), ("arg", pa.float64())])
REPORT_SCHEMA = pa.schema([("report", pa.string())])


def _runtime(tmp: Path, *, root: bool) -> Server:
    env = server_env()
    prefix: list[str] = []
    if not root:
        os.chown(tmp, NON_ROOT_UID, NON_ROOT_UID)
        env["HOME"] = str(tmp)
        prefix = as_user(NON_ROOT_UID, tmp)
    return Server(tmp / "data", [], env, prefix=prefix)


def _deploy(client: WallarooClient, tmp: Path, memory: str | None = MEMORY) -> None:
    hostile = client.upload_model("hostile", make_model(tmp, "hostile", HOSTILE), ACTION_SCHEMA, REPORT_SCHEMA)
    created = client.create_pipeline("hostile-pipe", steps=[hostile])
    side = {"cpus": CPUS, "memory": memory, "scratch_size": SCRATCH, "max_processes": MAX_PROCESSES}
    config = {"sidekicks": {"hostile": {k: v for k, v in side.items() if v is not None}}}
    dep = client.deploy("hostile-pipe", pipeline_id=created.pipeline_id, engine_config=config)
    client.wait_for_deployment(f"hostile-pipe-{dep}", timeout_s=120)
    honest = client.upload_model("honest", make_model(tmp, "honest", DOUBLE), X_SCHEMA, Y_SCHEMA)
    created = client.create_pipeline("honest-pipe", steps=[honest])
    dep = client.deploy("honest-pipe", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    client.wait_for_deployment(f"honest-pipe-{dep}", timeout_s=120)


def _ask(server: Server, action: str, arg: float = 0.0) -> httpx.Response:
    return httpx.post(f"{server.url}/infer/hostile-pipe", json=[{"action": action, "arg": arg}], timeout=120,
                      headers={**server.headers, "Content-Type": "application/json; format=pandas-records"})


def _report(server: Server, action: str, arg: float = 0.0) -> dict:
    answer = _ask(server, action, arg)
    assert answer.status_code == 200, answer.text
    return json.loads(answer.json()[0]["out"]["report"])


def _cgroup_dir(pid: int, controller: str) -> Path:
    """The v1 cgroup folder of ``pid`` for ``controller``, read from /proc (not from the runtime)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path(f"/sys/fs/cgroup/{controller}") / path.lstrip("/")
    raise AssertionError(f"pid {pid} is in no {controller} cgroup")


def _stat(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


class Neighbour:
    """Asks the honest pipeline again and again in the background; its latencies."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                start = time.monotonic()
                r = http.post(f"{self.server.url}/infer/honest-pipe", json=[{"x": 2.0}],
                              headers={**self.server.headers, "Content-Type": "application/json; format=pandas-records"})
                self.latencies.append(time.monotonic() - start)
                if r.status_code != 200 or r.json()[0]["out"]["y"] != 4.0:
                    self.errors.append(r.text[:300])
                time.sleep(0.1)

    def __enter__(self) -> Neighbour:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(70)


@pytest.fixture(scope="module")
def as_root() -> Iterator[Server]:
    home = Path(tempfile.mkdtemp(prefix="limits-test-"))
    srv = _runtime(home, root=True)
    try:
        srv.start()
        with srv.client(timeout=300) as client:
            _deploy(client, home)
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


def _worker_pid(server: Server) -> int:
    with server.client() as client:
        rows = [s for s in client.deployment_status("hostile-pipe").sidekicks if s.step == "hostile"]
    assert rows and rows[0].pid, rows
    return rows[0].pid


def test_health_says_every_limit_is_held_by_the_kernel_as_root(as_root: Server) -> None:
    limits = httpx.get(as_root.url + "/health", timeout=10).json()["sidekick_sandbox"]["limits"]
    assert limits["enforced"] == ["cpu_quota", "cpuset", "memory", "processes", "scratch"], limits
    assert limits["how"]["cpuset"].startswith("cgroup v1")
    with as_root.client() as client:
        row = next(s for s in client.deployment_status("hostile-pipe").sidekicks if s.step == "hostile")
    assert "not_enforced" not in row.limits and "cpu_throttled_periods" in row.limits, row.limits


def test_the_model_cannot_widen_its_cpu_set(as_root: Server) -> None:
    report = _report(as_root, "affinity")
    cpuset = _cgroup_dir(report["pid"], "cpuset") / "cpuset.cpus"
    assert cpuset.read_text().strip() == report["status"], (cpuset.read_text(), report)
    assert report["after"] == report["before"], report  # sched_setaffinity to every CPU changed nothing
    assert len(report["after"]) == 1 or len(report["after"]) < (os.cpu_count() or 1), report
    # read from outside too, after the call
    allowed = [line for line in Path(f"/proc/{report['pid']}/status").read_text().splitlines()
               if line.startswith("Cpus_allowed_list")][0].split(":")[1].strip()
    assert allowed == report["status"]


def test_the_model_is_throttled_past_its_cpu_quota_and_the_neighbour_keeps_answering(as_root: Server) -> None:
    pid = _worker_pid(as_root)
    cpu = _cgroup_dir(pid, "cpu")
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == int(CPUS * int((cpu / "cpu.cfs_period_us").read_text()))
    before = _stat(cpu / "cpu.stat")
    with Neighbour(as_root) as neighbour:
        report = _report(as_root, "spin", 2.0)  # four threads, each spinning 2 s of wall time
    after = _stat(cpu / "cpu.stat")
    assert after["nr_throttled"] - before["nr_throttled"] > 0, (before, after)
    assert after["throttled_time"] > before["throttled_time"]
    # 4 threads x 2 s of wall time would be up to 8 s of CPU unbounded (2 here); at 0.2 CPUs about 0.4 s
    assert report["cpu_s"] < 1.5, report
    assert not neighbour.errors, neighbour.errors
    assert neighbour.latencies and max(neighbour.latencies) < NEIGHBOUR_BOUND_S, neighbour.latencies
    print(f"neighbour latency while spinning: median {statistics.median(neighbour.latencies):.3f}s, "
          f"max {max(neighbour.latencies):.3f}s over {len(neighbour.latencies)} requests")


def test_the_model_cannot_start_more_processes_than_its_limit(as_root: Server) -> None:
    pid = _worker_pid(as_root)
    assert (_cgroup_dir(pid, "pids") / "pids.max").read_text().strip() == str(MAX_PROCESSES)
    with Neighbour(as_root) as neighbour:
        report = _report(as_root, "fork", 500)
    assert report["error"] == "EAGAIN", report
    assert report["started"] < MAX_PROCESSES, report
    assert not neighbour.errors, neighbour.errors
    assert _report(as_root, "fork", 3) == {"started": 3, "error": ""}  # it recovers once its children are gone


def test_the_model_cannot_write_past_its_scratch_size(as_root: Server, tmp_path: Path) -> None:
    answer = _ask(as_root, "fill", 64)
    assert answer.status_code >= 400, answer.text
    text = answer.text
    assert "No space left on device" in text and f"scratch_size is {SCRATCH}" in text, text
    assert "raise the step's sidekick scratch_size" in text
    # what it wrote took no space of the data directory's filesystem: it was a tmpfs of its own
    pid = _worker_pid(as_root)
    mounts = Path(f"/proc/{pid}/mountinfo").read_text()
    scratch = [line for line in mounts.splitlines() if "wallaroo-sidekick-" in line.split()[4]]
    assert scratch and " - tmpfs " in scratch[0], mounts
    assert _report(as_root, "fill", 4)["written"] == 4 * 2**20  # under its size, writes work


def test_the_kernel_kills_the_model_past_its_memory(as_root: Server) -> None:
    pid = _worker_pid(as_root)
    memory = _cgroup_dir(pid, "memory")
    assert int((memory / "memory.limit_in_bytes").read_text()) == 256 * 2**20
    answer = _ask(as_root, "memory", 600)
    assert answer.status_code >= 400
    assert "OOMKilled: the kernel killed it" in answer.text, answer.text
    assert "oom_kill 1" in (memory / "memory.oom_control").read_text() or not memory.exists()
    deadline = time.monotonic() + 60  # restarted, and answering again
    while time.monotonic() < deadline:
        if _ask(as_root, "fork", 1).status_code == 200:
            break
        time.sleep(0.5)
    assert _report(as_root, "fork", 1)["started"] == 1


def test_the_cgroups_are_removed_when_the_deployment_stops(as_root: Server) -> None:
    pid = _worker_pid(as_root)
    dirs = [_cgroup_dir(pid, c) for c in ("cpu", "cpuset", "memory", "pids")]
    assert all(d.is_dir() for d in dirs)
    with as_root.client() as client:
        client.undeploy("hostile-pipe")
    deadline = time.monotonic() + 30
    while any(d.exists() for d in dirs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(d.exists() for d in dirs), [d for d in dirs if d.exists()]


def test_without_root_health_says_which_limits_hold_and_rlimits_stand_in(tmp_path: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="limits-test-nonroot-"))
    srv = _runtime(home, root=False)
    try:
        srv.start()
        limits = httpx.get(srv.url + "/health", timeout=10).json()["sidekick_sandbox"]["limits"]
        assert limits["enforced"] == [], limits
        assert "RLIMIT_NPROC" in limits["how"]["processes"] and "RLIMIT_FSIZE" in limits["how"]["scratch"]
        assert limits["cgroups_unavailable"] == "the runtime is not root"
        with srv.client(timeout=300) as client:
            _deploy(client, home, memory=None)  # the watcher counts each child's shared pages again: no limit

            row = next(s for s in client.deployment_status("hostile-pipe").sidekicks if s.step == "hostile")
            assert set(row.limits["not_enforced"]) >= {"cpus 0.2", "max_processes", "scratch_size"}, row.limits
        report = _report(srv, "fork", 2000)
        assert report["error"] == "EAGAIN", report  # RLIMIT_NPROC, counted over the runtime's user
        answer = _ask(srv, "fill", 64)
        assert answer.status_code >= 400 and "File too large" in answer.text, answer.text  # RLIMIT_FSIZE
        assert f"scratch_size is {SCRATCH}" in answer.text
        assert _report(srv, "fork", 2)["started"] == 2  # and it goes on serving
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_a_runtime_removes_the_empty_cgroups_a_dead_runtime_left_and_keeps_a_live_ones(tmp_path: Path) -> None:
    dead, live = "999999999", str(os.getpid())  # no such pid; this test's own
    parent = Path("/sys/fs/cgroup/pids/wallaroo")
    for runtime_id in (dead, live):
        (parent / runtime_id / "worker-1").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="limits-test-sweep-"))
    srv = _runtime(home, root=True)
    try:
        srv.start()
        assert not (parent / dead).exists()
        assert (parent / live / "worker-1").is_dir()
    finally:
        srv.stop()
        (parent / live / "worker-1").rmdir()
        (parent / live).rmdir()
        shutil.rmtree(home, ignore_errors=True)
