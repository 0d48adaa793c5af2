"""Kernel-enforced limits for one worker: a cgroup of its own in each controller this host lets
root write (issue 28). cgroup v1 (one hierarchy per controller, as on this project's hosts) and
cgroup v2 (one unified hierarchy, its file names: cpu.max, memory.max, pids.max, memory.events)
are both read here; v1 is used where a v1 hierarchy holds the controllers.

Each worker's groups live under the runtime's own cgroup, so the limits of whatever runs the
runtime (a systemd unit, a container) still hold around them:
``<mount>/<the runtime's cgroup>/wallaroo/<runtime pid>/<worker>``. The runtime's pid names its
folder so a runtime starting later removes what a dead one left (`sweep`) and never a live one's.
The worker joins its groups itself, as root, before it drops privileges (the `confine` launcher
writes its pid to each ``cgroup.procs``), so the model's first instruction already runs inside."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field

log = logging.getLogger("wallaroo.sandbox")

#: The controllers a worker is limited with, and what each holds.
CONTROLLERS = ("cpu", "cpuset", "memory", "pids")
CFS_PERIOD_US = 100_000
TOP = "wallaroo"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (cpu.stat, memory.events, memory.oom_control) as a dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(fstype, mount root, mount point, controllers) of every cgroup mount."""
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, after = left.split(), right.split()
        if len(fields) < 5 or len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
            continue
        controllers = {opt for opt in after[2].split(",") if opt in CONTROLLERS} if after[0] == "cgroup" else set()
        found.append((after[0], fields[3], fields[4].replace("\\040", " "), controllers))
    return found


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """controller (or '' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctrl in parts[1].split(",") if parts[1] else [""]:
            own[ctrl] = parts[2]
    return own


def _below(mount_root: str, path: str) -> str:
    """``path`` (a cgroup path) relative to a mount of the hierarchy at ``mount_root``."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root):]
    return path.strip("/")


@dataclass(frozen=True)
class CgroupHost:
    """Where this runtime may make workers' cgroups: controller -> the folder to make them in
    (``<mount>/<own cgroup>/wallaroo``); empty when it may make none (not root, no cgroup fs)."""

    version: int = 0  # 1, 2, or 0: none usable
    parents: dict[str, str] = field(default_factory=dict)
    why_not: str = ""

    @classmethod
    def detect(cls) -> CgroupHost:
        if os.geteuid() != 0:
            return cls(why_not="the runtime is not root")
        try:
            mounts = _mounts(_read("/proc/self/mountinfo"))
            own = _own_paths(_read("/proc/self/cgroup"))
        except OSError as exc:
            return cls(why_not=f"cannot read the cgroup mounts: {exc}")
        v1 = {ctrl: os.path.join(point, _below(root, own.get(ctrl, "/")))
              for kind, root, point, ctrls in mounts if kind == "cgroup" for ctrl in ctrls}
        if v1:
            return cls._usable(1, {c: os.path.join(p, TOP) for c, p in v1.items()})
        for kind, root, point, _ in mounts:
            if kind != "cgroup2":
                continue
            base = os.path.join(point, _below(root, own.get("", "/")))
            with contextlib.suppress(OSError):
                offered = set(_read(os.path.join(base, "cgroup.controllers")).split()) & set(CONTROLLERS)
                if offered:
                    return cls._usable(2, dict.fromkeys(offered, os.path.join(base, TOP)))
        return cls(why_not="no cgroup hierarchy offers the cpu, cpuset, memory or pids controller")

    @classmethod
    def _usable(cls, version: int, parents: dict[str, str]) -> CgroupHost:
        ok: dict[str, str] = {}
        problems = []
        for ctrl, parent in sorted(parents.items()):
            try:
                os.makedirs(parent, exist_ok=True)
                if version == 1 and ctrl == "cpuset":
                    _inherit_cpuset(parent)
                if version == 2:
                    _enable_v2(os.path.dirname(parent), parents)
                    _enable_v2(parent, parents)
                ok[ctrl] = parent
            except OSError as exc:
                problems.append(f"{ctrl}: {exc.strerror or exc}")
        return cls(version=version if ok else 0, parents=ok, why_not="; ".join(problems))

    @property
    def controllers(self) -> set[str]:
        return set(self.parents)

    def worker(self, runtime_id: str, name: str) -> WorkerCgroup:
        """Make the groups of one worker (empty, no limits yet)."""
        dirs: dict[str, str] = {}
        for ctrl, parent in self.parents.items():
            folder = os.path.join(parent, runtime_id)
            # Every time, not only by the thread that made the folder: workers open at once (a
            # split's models), and one that found the folder made but its cpuset not yet set
            # inherited an empty cpuset, so the kernel refused its pid (ENOSPC).
            os.makedirs(folder, exist_ok=True)
            if self.version == 1 and ctrl == "cpuset":
                _inherit_cpuset(folder)
            if self.version == 2:
                _enable_v2(folder, self.parents)
            path = os.path.join(folder, name)
            os.makedirs(path, exist_ok=True)
            if self.version == 1 and ctrl == "cpuset":
                _inherit_cpuset(path)
            dirs[ctrl] = path
        return WorkerCgroup(self.version, dirs)

    def release(self, runtime_id: str) -> None:
        """Remove this runtime's folder, with whatever empty groups are left in it."""
        for parent in set(self.parents.values()):
            _remove_tree(os.path.join(parent, runtime_id))

    def sweep(self, keep: str) -> int:
        """Remove the empty groups of runtimes no longer running (their folder is named by their
        pid), never ``keep`` (this runtime's); how many were removed."""
        removed = 0
        for parent in set(self.parents.values()):
            with contextlib.suppress(OSError):
                for entry in os.scandir(parent):
                    alive = entry.name.isdigit() and os.path.exists(f"/proc/{entry.name}")
                    if not entry.is_dir() or entry.name == keep or alive:
                        continue
                    removed += _remove_tree(entry.path)
        return removed


def _inherit_cpuset(path: str) -> None:
    """A v1 cpuset group takes no task before its cpus and mems are set: start with its parent's."""
    parent = os.path.dirname(path)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not _read(os.path.join(path, name)).strip():
            _write(os.path.join(path, name), _read(os.path.join(parent, name)).strip())


def _enable_v2(path: str, parents: dict[str, str]) -> None:
    """Let the groups below ``path`` use the controllers (v2's cgroup.subtree_control)."""
    wanted = " ".join(f"+{c}" for c in parents)
    try:
        _write(os.path.join(path, "cgroup.subtree_control"), wanted)
    except OSError as exc:
        if exc.errno != 16:  # EBUSY: processes live in ``path``; v2 lets no group hold both
            raise
        raise OSError(exc.errno, f"{path} holds processes, so its children cannot be given controllers "
                                 "(run the runtime in a cgroup of its own, e.g. a systemd unit with Delegate=yes)") from None


def _remove_tree(path: str) -> int:
    removed = 0
    for root, dirs, _ in os.walk(path, topdown=False):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, name))
                removed += 1
    with contextlib.suppress(OSError):
        os.rmdir(path)
        removed += 1
    return removed


@dataclass
class WorkerCgroup:
    """The groups of one worker: controller -> folder."""

    version: int
    dirs: dict[str, str]
    memory_limited: bool = False

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the worker writes its pid to (one per hierarchy)."""
        return [os.path.join(d, "cgroup.procs") for d in dict.fromkeys(self.dirs.values())]

    def _file(self, ctrl: str, name: str) -> str | None:
        folder = self.dirs.get(ctrl)
        return os.path.join(folder, name) if folder else None

    def limit(self, *, cpus: float, cpu_ids: list[int], memory_bytes: int | None, max_processes: int | None) -> None:
        """Set the worker's limits; raises OSError naming what the kernel refused."""
        quota = max(1000, math.ceil(cpus * CFS_PERIOD_US))
        if self.version == 1:
            self._set("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US))
            self._set("cpu", "cpu.cfs_quota_us", str(quota))
        else:
            self._set("cpu", "cpu.max", f"{quota} {CFS_PERIOD_US}")
        if cpu_ids:
            self._set("cpuset", "cpuset.cpus", ",".join(map(str, cpu_ids)))
        if max_processes is not None:
            self._set("pids", "pids.max", str(max_processes))
        if memory_bytes is not None and "memory" in self.dirs:
            if self.version == 1:
                self._set("memory", "memory.limit_in_bytes", str(memory_bytes))
                with contextlib.suppress(OSError):  # absent without swap accounting
                    self._set("memory", "memory.memsw.limit_in_bytes", str(memory_bytes))
            else:
                self._set("memory", "memory.max", str(memory_bytes))
                with contextlib.suppress(OSError):
                    self._set("memory", "memory.swap.max", "0")
                self._set("memory", "memory.oom.group", "1")  # the whole worker goes, as in a pod
            self.memory_limited = True

    def _set(self, ctrl: str, name: str, value: str) -> None:
        path = self._file(ctrl, name)
        if path is None:
            return
        try:
            _write(path, value)
        except OSError as exc:
            raise OSError(exc.errno, f"cgroup {name} = {value}: {exc.strerror}") from None

    # -- what the kernel counted --------------------------------------------------------
    def oom_kills(self) -> int:
        path = self._file("memory", "memory.oom_control" if self.version == 1 else "memory.events")
        with contextlib.suppress(OSError):
            return _flat_keyed(_read(path or "")).get("oom_kill", 0)
        return 0

    def stats(self) -> dict[str, int]:
        """Throttling (periods, throttled periods, throttled µs), memory peak and limit hits, processes."""
        out: dict[str, int] = {}
        path = self._file("cpu", "cpu.stat")
        with contextlib.suppress(OSError):
            cpu = _flat_keyed(_read(path or ""))
            out["cpu_periods"] = cpu.get("nr_periods", 0)
            out["cpu_throttled_periods"] = cpu.get("nr_throttled", 0)
            out["cpu_throttled_us"] = cpu["throttled_usec"] if "throttled_usec" in cpu else cpu.get("throttled_time", 0) // 1000
        if "memory" in self.dirs:
            out["oom_kills"] = self.oom_kills()
            if self.version == 1:
                with contextlib.suppress(OSError, ValueError):
                    out["memory_limit_hits"] = int(_read(self._file("memory", "memory.failcnt") or ""))
                    out["memory_peak_bytes"] = int(_read(self._file("memory", "memory.max_usage_in_bytes") or ""))
            else:
                with contextlib.suppress(OSError):
                    out["memory_limit_hits"] = _flat_keyed(_read(self._file("memory", "memory.events") or "")).get("max", 0)
                with contextlib.suppress(OSError, ValueError):
                    out["memory_peak_bytes"] = int(_read(self._file("memory", "memory.peak") or ""))
        with contextlib.suppress(OSError, ValueError):
            out["processes"] = int(_read(self._file("pids", "pids.current") or ""))
        return out

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.procs_files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in _read(path).split())
        return sorted(found)

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL everything in the groups (what a worker left behind, however it forked)."""
        kill_file = self._file(next(iter(self.dirs), ""), "cgroup.kill") if self.version == 2 else None
        if kill_file is not None:
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left and remove the groups."""
        self.kill()
        for path in dict.fromkeys(self.dirs.values()):
            for _ in range(50):  # the last exits are reaped a moment after the kill
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                log.warning("could not remove the cgroup %s", path)
