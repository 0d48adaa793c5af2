"""`Sandbox`: what every confined process may read (the system, the Python install, our
package), whether this host can confine at all, and `Box`es: one per worker or pip install, with
its scratch directory and, as root, a uid of its own, turning a command into one run by the
`confine` launcher. What a box may take (`Bounds`: CPU, cpuset, memory, processes, scratch) is
held by the kernel: cgroups of its own as root, rlimits without (issue 28); `limits_report`
says which hold here."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import site
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wallaroo_pulumi.runtime.core.errors import Unavailable
from wallaroo_pulumi.runtime.sandbox.cgroups import CgroupHost, WorkerCgroup
from wallaroo_pulumi.runtime.sandbox.policy import ENV_VAR, Policy
from wallaroo_pulumi.runtime.sandbox.support import Support

log = logging.getLogger("wallaroo.sandbox")

LAUNCHER = "wallaroo_pulumi.runtime.sandbox.confine"
SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/sys")
#: What of /etc a Python process needs: TLS roots, name resolution, time zone, users, the loader, pip.
ETC_READ = tuple(f"/etc/{name}" for name in (
    "ssl", "ca-certificates", "ca-certificates.conf", "pki", "crypto-policies", "resolv.conf", "hosts", "host.conf",
    "nsswitch.conf", "gai.conf", "services", "protocols", "localtime", "timezone", "passwd", "group", "ld.so.cache",
    "ld.so.conf", "ld.so.conf.d", "mime.types", "pip.conf", "alternatives", "os-release", "lsb-release",
    "debian_version", "redhat-release", "system-release", "alpine-release", "fonts",
))
STD_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
#: Our packages, the only part of a source checkout a confined process reads.
PACKAGES = ("wallaroo_pulumi", "mac", "wallaroo_pulumi.components")


#: What a requirements install may take: its own bound, apart from any model's.
INSTALL_FILE_BYTES = 4 * 2**30  # one file (a wheel being downloaded or unpacked)
INSTALL_CPU_SECONDS = 1800


@dataclass(frozen=True)
class Bounds:
    """What one worker may take of the machine."""

    cpus: float = 1.0
    cpu_ids: tuple[int, ...] = ()
    memory_bytes: int | None = None
    max_processes: int | None = None
    scratch_bytes: int | None = None


class SandboxRefused(Unavailable):
    """This host cannot confine sidekicks and the runtime was not told to run them anyway."""

    source = "sandbox"


def _package_dirs() -> list[str]:
    dirs: list[str] = []
    for name in PACKAGES:
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.origin:
                dirs.append(os.path.dirname(os.path.realpath(spec.origin)))
    return list(dict.fromkeys(dirs))


def _source_roots(packages: list[str]) -> list[str]:
    """The folders holding our packages that are a source checkout (an editable install), not an
    installation: only their names may be listed, the checkout is not readable whole."""
    installed = [os.path.realpath(p) for p in (*site.getsitepackages(), site.getusersitepackages())]
    prefixes = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)]
    parents = dict.fromkeys(os.path.dirname(p) for p in packages)
    return [p for p in parents if p not in installed and not any(_inside(p, prefix) for prefix in prefixes)]


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def gpu_devices() -> list[str]:
    return sorted(p for p in glob.glob("/dev/nvidia*") + glob.glob("/dev/nvidia-caps/*") if not os.path.isdir(p))


def kill_uid(uid: int) -> int:
    """SIGKILL every process whose real uid is ``uid`` (what a worker left behind); how many."""
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                real = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
            if real == uid:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
        except (OSError, StopIteration, ValueError):
            continue
    return killed


class Sandbox:
    """One per runtime. ``protect``: paths no confined process may see (the data directory)."""

    def __init__(self, support: Support, *, uids: tuple[int, int], protect: Sequence[Path] = (),
                 insecure: bool = False) -> None:
        self.support = support
        self.uids = uids
        self.insecure = insecure
        packages = _package_dirs()
        self.source_roots = _source_roots(packages)
        self.read = self._python_paths(packages)
        self.protect = [os.path.realpath(p) for p in protect]
        # a private root hides them wherever they are; Landlock rules cannot take a folder out of a granted one
        self.exposed = [] if support.private_root else list(dict.fromkeys(
            f"the data directory {p} lies inside {g}, which sidekicks may read; choose a data directory outside it"
            for p in self.protect for g in (*self.read, *self.source_roots) if _inside(p, os.path.realpath(g))))
        self._lock_dir: Path | None = None
        self.runtime_id = str(os.getpid())
        self.cgroups = CgroupHost.detect() if support.private_root else CgroupHost(
            why_not="the runtime is not root" if not support.root else "no CAP_SYS_ADMIN")
        if self.cgroups.version:
            swept = self.cgroups.sweep(keep=self.runtime_id)
            if swept:
                log.info("removed %d cgroup(s) left by runtimes no longer running", swept)

    def _python_paths(self, packages: list[str]) -> list[str]:
        """The system, the Python install, every import path of this process, our packages; never
        a source checkout or the working directory whole (only its packages)."""
        paths = [*SYSTEM_READ, *ETC_READ, sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix]
        skip = {os.path.realpath(p) for p in (*self.source_roots, os.getcwd())}
        paths += [p for p in sys.path if p and os.path.exists(p) and os.path.realpath(p) not in skip]
        return list(dict.fromkeys([*paths, *packages]))

    # -- what the host offers -----------------------------------------------------------------
    @property
    def problems(self) -> list[str]:
        return [*self.support.missing, *self.exposed]

    @property
    def refusal(self) -> str | None:
        """Why no sidekick may start here, or None."""
        if not self.problems or self.insecure:
            return None
        return ("sidekicks are not sandboxed on this host, so the runtime starts none: missing " + "; ".join(self.problems)
                + ". Start the runtime with --insecure-sidekicks to run them anyway, where a model could read the "
                "data directory and other models' credentials")

    def report(self) -> dict[str, object]:
        """For /health: no paths."""
        return {
            "sandboxed": not self.problems,
            "state": "sandboxed" if not self.problems else "insecure" if self.insecure else "refusing sidekicks",
            "mechanisms": self.support.mechanisms(),
            "missing": [*self.support.missing, *(["a data directory outside what sidekicks read"] if self.exposed else [])],
            **({"uids": f"{self.uids[0]}-{self.uids[1]}"} if self.support.private_root else {}),
            "limits": self.limits_report(),
        }

    def limits_report(self) -> dict[str, object]:
        """How each bound on a worker holds here: by the kernel, or only in part."""
        ctrls = self.cgroups.controllers
        v = self.cgroups.version
        private = self.support.private_root
        how = {
            "cpu_quota": f"cgroup v{v} cpu quota" if "cpu" in ctrls else None,
            "cpuset": f"cgroup v{v} cpuset" if "cpuset" in ctrls else None,
            "memory": f"cgroup v{v} memory limit" if "memory" in ctrls else None,
            "processes": (f"cgroup v{v} pids limit" if "pids" in ctrls
                          else "RLIMIT_NPROC of its own uid" if private else None),
            "scratch": "a size-limited tmpfs in its private root" if private else None,
        }
        partly = {
            "cpu_quota": "not enforced: a worker may use every core it is pinned to",
            "cpuset": "CPU affinity only: a model may widen it",
            "memory": "a resident-memory watcher that kills the worker past its limit (sampled every 50 ms)",
            "processes": "RLIMIT_NPROC, counted over every process of the runtime's user (approximate)",
            "scratch": "RLIMIT_FSIZE: no one file past the scratch size; scratch shares the filesystem of /tmp",
        }
        return {
            "enforced": sorted(k for k, v in how.items() if v),
            "how": {k: v or partly[k] for k, v in how.items()},
            **({"cgroups_unavailable": self.cgroups.why_not} if self.cgroups.why_not else {}),
        }

    def unenforced(self, bounds: Bounds) -> list[str]:
        """What of ``bounds`` this host cannot hold to by the kernel: for the deploy's status."""
        enforced = set(self.limits_report()["enforced"])  # type: ignore[arg-type]
        wanted = {"cpu_quota": bounds.cpus % 1 != 0 or bounds.cpus < len(bounds.cpu_ids),
                  "memory": bounds.memory_bytes is not None, "processes": bounds.max_processes is not None,
                  "scratch": bounds.scratch_bytes is not None, "cpuset": bool(bounds.cpu_ids)}
        text = {"cpu_quota": f"cpus {bounds.cpus:g}", "memory": "memory", "processes": "max_processes",
                "scratch": "scratch_size", "cpuset": "its CPU set"}
        return [text[k] for k, asked in wanted.items() if asked and k not in enforced]

    def close(self) -> None:
        """The runtime stops: remove its cgroups folder (its workers' are gone already)."""
        if self.cgroups.version:
            self.cgroups.release(self.runtime_id)

    def log_status(self) -> None:
        if not self.problems:
            how = (f"a uid of its own in {self.uids[0]}-{self.uids[1]} and a private root, " if self.support.private_root
                   else "")
            log.info("sidekicks sandboxed: %sLandlock ABI %d", how, self.support.landlock_abi)
        elif self.insecure:
            log.warning("sidekicks are NOT fully sandboxed (--insecure-sidekicks): missing %s", "; ".join(self.problems))
        else:
            log.error("%s", self.refusal)

    # -- boxes --------------------------------------------------------------------------------
    def open(self, bounds: Bounds | None = None, name: str = "", under: Path | None = None) -> Box:
        """A scratch directory (in ``under``, default the temp dir) and (as root) a uid of its own, for
        one worker or one install; with ``bounds``, cgroups of its own holding them where this host has them."""
        if self.refusal is not None:
            raise SandboxRefused(self.refusal)
        uid, lock = self._take_uid() if self.support.private_root else (None, None)
        if under is not None:
            under.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="wallaroo-sidekick-", dir=under))
        if uid is not None:
            os.chown(scratch, uid, uid)
        box = Box(self, uid, scratch, lock, bounds)
        if bounds is not None and self.cgroups.version:
            try:
                box.cgroup = self.cgroups.worker(self.runtime_id, f"{name or 'worker'}-{uid}-{scratch.name}")
                box.cgroup.limit(cpus=bounds.cpus, cpu_ids=list(bounds.cpu_ids), memory_bytes=bounds.memory_bytes,
                                 max_processes=bounds.max_processes)
            except OSError as exc:
                box.close()
                raise SandboxRefused(f"could not give the worker its limits: {exc}") from None
        return box

    def _take_uid(self) -> tuple[int, int]:
        """A uid no other box on this host holds (a lock file per uid, shared by every runtime
        here); whatever still runs under it from before is killed first."""
        lock_dir = self._locks()
        low, high = self.uids
        count = high - low + 1
        start = random.randrange(count)
        for i in range(count):
            uid = low + (start + i) % count
            fd = os.open(lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            kill_uid(uid)
            return uid, fd
        raise SandboxRefused(f"every sidekick uid in {low}-{high} is in use; widen --sidekick-uids")

    def _locks(self) -> Path:
        if self._lock_dir is None:
            base = Path("/run") if os.path.isdir("/run") else Path(tempfile.gettempdir())
            path = base / "wallaroo-pulumi-sidekick-uids"
            path.mkdir(mode=0o700, exist_ok=True)
            if path.is_symlink() or path.stat().st_uid != os.geteuid():
                raise SandboxRefused(f"{path} is not a directory of this user; remove it")
            self._lock_dir = path
        return self._lock_dir

    def reclaim(self, path: Path) -> None:
        """Make what a confined process wrote under ``path`` ours and read-only to everyone else."""
        euid, egid = os.geteuid(), os.getegid()
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files, ""]:
                item = os.path.join(root, name) if name else root
                if self.support.private_root:
                    os.lchown(item, euid, egid)
                if not os.path.islink(item):
                    os.chmod(item, os.stat(item).st_mode & 0o755)


def _user_tasks(uid: int) -> int:
    """Tasks (processes and threads) running under real uid ``uid``: what RLIMIT_NPROC counts."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, StopIteration, ValueError), open(f"/proc/{entry.name}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
                if int(fields["Uid"].split()[0]) == uid:
                    count += int(fields["Threads"])
    return count


@dataclass
class Box:
    sandbox: Sandbox
    uid: int | None
    scratch: Path
    _lock: int | None = None
    bounds: Bounds | None = None
    cgroup: WorkerCgroup | None = None

    def _rlimits(self) -> list[tuple[str, int]]:
        """The rlimits that stand in for what no cgroup holds; for an install, its own bounds."""
        bounds = self.bounds
        if bounds is None:  # a requirements install
            return [("RLIMIT_FSIZE", INSTALL_FILE_BYTES), ("RLIMIT_CPU", INSTALL_CPU_SECONDS)]
        limits = []
        ctrls = self.cgroup.dirs if self.cgroup is not None else {}
        if bounds.max_processes is not None and "pids" not in ctrls:
            # its own uid: exact; the runtime's uid: what already runs under it counts too
            base = 0 if self.uid is not None else _user_tasks(os.getuid())
            limits.append(("RLIMIT_NPROC", base + bounds.max_processes))
        if bounds.scratch_bytes is not None and self.uid is None:  # no private root, so no tmpfs scratch
            limits.append(("RLIMIT_FSIZE", bounds.scratch_bytes))
        return limits

    def give(self, path: Path) -> None:
        """Let the confined process write ``path`` (a folder the runtime made for it)."""
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)

    def command(self, argv: list[str], env: dict[str, str], *, cwd: str, read: Iterable[Path | str] = (),
                write: Iterable[Path | str] = (), devices: Iterable[str] = (),
                placed: Iterable[tuple[Path | str, str]] = (),
                die_with_parent: bool = False) -> tuple[list[str], dict[str, str], str]:
        """(argv, env, cwd) that run ``argv`` (an absolute executable) confined, with ``env`` as its
        whole environment: it reads the sandbox's paths and ``read``, writes its scratch and ``write``;
        in a private root, each ``placed`` (file, path) shows that file read-only at that path;
        ``die_with_parent``: killed when this process dies."""
        sandbox = self.sandbox
        abi = sandbox.support.landlock_abi
        rlimits = tuple(self._rlimits())
        if self.uid is None and not abi and not rlimits:  # --insecure-sidekicks on a host with nothing to confine with
            return argv, env, cwd
        confined = self.uid is not None or abi
        policy = Policy(
            read=tuple([*sandbox.read, *map(str, read)]) if confined else (),
            write=(str(self.scratch), *map(str, write)) if confined else (),
            listed=tuple(sandbox.source_roots) if confined else (), devices=(*STD_DEVICES, *devices) if confined else (),
            hidden=tuple(sandbox.protect), cwd=cwd, uid=self.uid, landlock_abi=abi,
            cgroup_procs=tuple(self.cgroup.procs_files) if self.cgroup is not None else (),
            scratch=str(self.scratch), rlimits=rlimits,
            scratch_bytes=self.bounds.scratch_bytes if self.bounds is not None and self.uid is not None else None,
            placed=tuple((str(src), dst) for src, dst in placed) if self.uid is not None else (),
            die_with_parent=die_with_parent,
        )
        launcher_env = {
            "PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join(sandbox.source_roots), ENV_VAR: json.dumps(env),
        }
        return [sys.executable, "-P", "-m", LAUNCHER, "--policy", policy.to_json(), "--", *argv], launcher_env, "/"

    def stopped(self) -> None:
        """The worker is gone (before a restart): kill whatever it left in its cgroups."""
        if self.cgroup is not None:
            self.cgroup.kill()

    def close(self) -> None:
        """Kill what still runs under the box's uid or in its cgroups, remove them and its scratch, give the uid back."""
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        if self.uid is not None:
            kill_uid(self.uid)
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
