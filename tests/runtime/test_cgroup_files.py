"""`cgroups` without a kernel: which hierarchy holds which controller (from mountinfo and
/proc/self/cgroup), and the files a worker's limits are written to and its counts read from,
under cgroup v1 and v2 names (the v2 path cannot run on this project's v1 hosts; issue 28)."""

from __future__ import annotations

from pathlib import Path

from wallaroo_pulumi.runtime.sandbox.cgroups import WorkerCgroup, _below, _mounts, _own_paths

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 /kubepods/pod1 /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_SELF = "4:memory:/kubepods/pod1/runtime\n3:cpuset:/\n1:cpu,cpuacct:/system.slice/x.service\n0::/\n"


def test_v1_hierarchies_and_the_runtimes_own_cgroup_in_each() -> None:
    mounts = _mounts(V1_MOUNTINFO)
    assert [(kind, point, ctrls) for kind, _, point, ctrls in mounts] == [
        ("cgroup", "/sys/fs/cgroup/cpu,cpuacct", {"cpu"}), ("cgroup", "/sys/fs/cgroup/cpuset", {"cpuset"}),
        ("cgroup", "/sys/fs/cgroup/memory", {"memory"}), ("cgroup2", "/sys/fs/cgroup/unified", set())]
    own = _own_paths(V1_SELF)
    assert own["cpu"] == own["cpuacct"] == "/system.slice/x.service" and own[""] == "/"
    assert _below("/kubepods/pod1", own["memory"]) == "runtime"  # a mount of a subtree (a container's)
    assert _below("/", own["cpu"]) == "system.slice/x.service"


def _fake(tmp_path: Path, version: int, files: dict[str, str]) -> WorkerCgroup:
    dirs = {}
    for ctrl in ("cpu", "cpuset", "memory", "pids"):
        folder = tmp_path / (ctrl if version == 1 else "unified")
        folder.mkdir(exist_ok=True)
        dirs[ctrl] = str(folder)
    for name, text in files.items():
        for folder in set(dirs.values()):
            if name.split(".")[0] in ("cpu", "memory", "pids", "cpuset") and (version == 2 or name.startswith(Path(folder).name)):
                (Path(folder) / name).write_text(text)
    return WorkerCgroup(version, dirs)


def test_v2_limits_use_its_file_names(tmp_path: Path) -> None:
    group = _fake(tmp_path, 2, {})
    group.limit(cpus=0.5, cpu_ids=[1, 3], memory_bytes=256 * 2**20, max_processes=64)
    folder = tmp_path / "unified"
    assert (folder / "cpu.max").read_text() == "50000 100000"
    assert (folder / "cpuset.cpus").read_text() == "1,3"
    assert (folder / "pids.max").read_text() == "64"
    assert (folder / "memory.max").read_text() == str(256 * 2**20)
    assert (folder / "memory.swap.max").read_text() == "0"
    assert (folder / "memory.oom.group").read_text() == "1"  # the whole worker goes, as in a pod
    assert group.memory_limited and group.procs_files == [str(folder / "cgroup.procs")]


def test_v2_counts_come_from_its_files(tmp_path: Path) -> None:
    group = _fake(tmp_path, 2, {
        "cpu.stat": "usage_usec 900\nnr_periods 40\nnr_throttled 12\nthrottled_usec 3456\n",
        "memory.events": "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 1\n",
        "memory.peak": "123456\n", "pids.current": "5\n",
    })
    assert group.oom_kills() == 2
    assert group.stats() == {"cpu_periods": 40, "cpu_throttled_periods": 12, "cpu_throttled_us": 3456, "oom_kills": 2,
                             "memory_limit_hits": 7, "memory_peak_bytes": 123456, "processes": 5}


def test_v1_limits_and_counts_use_its_file_names(tmp_path: Path) -> None:
    group = _fake(tmp_path, 1, {
        "cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 5000000\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        "memory.failcnt": "9\n", "memory.max_usage_in_bytes": "777\n", "pids.current": "3\n",
    })
    group.limit(cpus=2, cpu_ids=[0, 1], memory_bytes=2**30, max_processes=100)
    assert (tmp_path / "cpu" / "cpu.cfs_quota_us").read_text() == "200000"
    assert (tmp_path / "cpu" / "cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "memory" / "memory.limit_in_bytes").read_text() == str(2**30)
    assert (tmp_path / "pids" / "pids.max").read_text() == "100"
    assert group.stats() == {"cpu_periods": 10, "cpu_throttled_periods": 4, "cpu_throttled_us": 5000, "oom_kills": 1,
                             "memory_limit_hits": 9, "memory_peak_bytes": 777, "processes": 3}


def test_rlimits_stand_in_where_no_cgroup_holds_and_installs_have_bounds_of_their_own(tmp_path: Path) -> None:
    from wallaroo_pulumi.runtime.sandbox.policy import Policy
    from wallaroo_pulumi.runtime.sandbox.sandbox import INSTALL_CPU_SECONDS, INSTALL_FILE_BYTES, Bounds, Box

    bounds = Bounds(cpus=0.5, cpu_ids=(0,), memory_bytes=2**28, max_processes=40, scratch_bytes=2**24)
    install = Box(None, None, tmp_path)  # type: ignore[arg-type]
    assert install._rlimits() == [("RLIMIT_FSIZE", INSTALL_FILE_BYTES), ("RLIMIT_CPU", INSTALL_CPU_SECONDS)]
    own_uid = Box(None, 2_000_000_001, tmp_path, bounds=bounds)  # type: ignore[arg-type]
    assert own_uid._rlimits() == [("RLIMIT_NPROC", 40)]  # exact: the uid is its alone; scratch is a tmpfs
    shared = Box(None, None, tmp_path, bounds=bounds)._rlimits()  # type: ignore[arg-type]
    assert shared[0][0] == "RLIMIT_NPROC" and shared[0][1] > 40  # what the runtime's user runs counts too
    assert shared[1] == ("RLIMIT_FSIZE", 2**24)
    pids = WorkerCgroup(1, {"pids": str(tmp_path)})
    assert Box(None, 2_000_000_001, tmp_path, bounds=bounds, cgroup=pids)._rlimits() == []  # type: ignore[arg-type]
    policy = Policy(cgroup_procs=("/sys/fs/cgroup/pids/x/cgroup.procs",), scratch="/tmp/s", scratch_bytes=2**24,
                    rlimits=(("RLIMIT_NPROC", 40),))
    assert Policy.from_json(policy.to_json()) == policy
