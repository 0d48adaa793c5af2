"""`Sandbox`: what every confined process may read (the system, the Python install, our
package), whether this host can confine at all, and `Box`es: one per worker or pip install, with
its scratch directory and, as root, a uid of its own, turning a command into one run by the
`confine` launcher."""

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
    "debian_version", "redhat-release", "system-release", "alpine-release",
))
STD_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
#: Our packages, the only part of a source checkout a confined process reads.
PACKAGES = ("wallaroo_pulumi", "mac", "wallaroo_pulumi.components")


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
        }

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
    def open(self) -> Box:
        """A scratch directory and (as root) a uid of its own, for one worker or one install."""
        if self.refusal is not None:
            raise SandboxRefused(self.refusal)
        uid, lock = self._take_uid() if self.support.private_root else (None, None)
        scratch = Path(tempfile.mkdtemp(prefix="wallaroo-sidekick-"))
        if uid is not None:
            os.chown(scratch, uid, uid)
        return Box(self, uid, scratch, lock)

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


@dataclass
class Box:
    sandbox: Sandbox
    uid: int | None
    scratch: Path
    _lock: int | None = None

    def give(self, path: Path) -> None:
        """Let the confined process write ``path`` (a folder the runtime made for it)."""
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)

    def command(self, argv: list[str], env: dict[str, str], *, cwd: str, read: Iterable[Path | str] = (),
                write: Iterable[Path | str] = (), devices: Iterable[str] = ()) -> tuple[list[str], dict[str, str], str]:
        """(argv, env, cwd) that run ``argv`` (an absolute executable) confined, with ``env`` as its
        whole environment: it reads the sandbox's paths and ``read``, writes its scratch and ``write``."""
        sandbox = self.sandbox
        abi = sandbox.support.landlock_abi
        if self.uid is None and not abi:  # --insecure-sidekicks on a host with nothing to confine with
            return argv, env, cwd
        policy = Policy(
            read=tuple([*sandbox.read, *map(str, read)]), write=(str(self.scratch), *map(str, write)),
            listed=tuple(sandbox.source_roots), devices=(*STD_DEVICES, *devices), hidden=tuple(sandbox.protect),
            cwd=cwd, uid=self.uid, landlock_abi=abi,
        )
        launcher_env = {
            "PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join(sandbox.source_roots), ENV_VAR: json.dumps(env),
        }
        return [sys.executable, "-P", "-m", LAUNCHER, "--policy", policy.to_json(), "--", *argv], launcher_env, "/"

    def close(self) -> None:
        """Kill what still runs under the box's uid, remove its scratch, give the uid back."""
        if self.uid is not None:
            kill_uid(self.uid)
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
