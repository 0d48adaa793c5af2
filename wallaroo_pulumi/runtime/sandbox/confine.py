"""The launcher: ``python -P -m wallaroo_pulumi.runtime.sandbox.confine --policy JSON -- CMD ARGS...``
confines itself as the `Policy` says, then execs CMD with the environment the runtime put in
$WALLAROO_CONFINED_ENV, so a model's own variables (LD_PRELOAD, PYTHONPATH) act only once it is
confined. Any failure exits 126 with the reason on stderr: nothing runs half confined.

As root, first of all: it joins the worker's cgroups (``cgroup_procs``), so what it runs, and all
it forks, is bounded by the kernel from its first instruction (cgroups.py).
As root (``uid`` set): private mount and IPC namespaces whose root is a tmpfs holding only the
policy's paths (bind mounts, read-only but for ``write``; ``hidden`` ones empty; ``placed`` files at
paths of their own), a /proc that
shows only its own processes and a /dev/shm of its own; then that uid and gid, with no groups and no capabilities.
Then, as any user: Landlock rules for the same paths, signals and abstract sockets scoped to
itself (a Landlock domain also keeps it from ptrace and from other processes' /proc files).
In a private root, the scratch folder is a tmpfs of ``scratch_bytes`` (its own space, never the
data directory's filesystem): a write past it fails with ENOSPC. Last, the ``rlimits`` (process
count, file size) are set (and, ``die_with_parent``, a SIGKILL when its starter dies), then the
command is executed."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import resource
import stat
import sys

from wallaroo_pulumi.runtime.sandbox.policy import ENV_VAR, Policy

EXIT_NOT_CONFINED = 126

_CLONE_NEWNS, _CLONE_NEWIPC = 0x00020000, 0x08000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
#: Where the new root's tmpfs is mounted (in our own mount namespace only) before pivot_root.
_NEW_ROOT = "/tmp"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)), f"mount {target}")


def _mount_flags(target: str) -> int:
    """The flags of the mount at ``target`` that a bind remount must keep."""
    have = os.statvfs(target).f_flag
    return sum(ms for st, ms in ((os.ST_NOEXEC, _MS_NOEXEC), (os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV))
               if have & st)


def _entries(policy: Policy) -> dict[str, tuple[str, bool]]:
    """realpath -> (kind, read-only) for every existing path of the policy; a path written
    wins over the same path read."""
    found: dict[str, tuple[str, bool]] = {}
    for paths, kind, readonly in ((policy.read, "path", True), (policy.devices, "device", False),
                                  (policy.write, "path", False)):
        for path in paths:
            if os.path.exists(path):
                found[os.path.realpath(path)] = (kind, readonly)
    return found


def _symlinks(policy: Policy) -> dict[str, str]:
    """The first symlink on the way to each listed path (``/lib`` -> ``usr/lib``), recreated in the
    private root so the path reads the same there."""
    links: dict[str, str] = {}
    for path in (*policy.read, *policy.write, *policy.devices):
        prefix = ""
        for part in path.strip("/").split("/"):
            prefix += "/" + part
            if os.path.islink(prefix):
                links[prefix] = os.readlink(prefix)
                break
    return links


def _private_root(policy: Policy) -> None:
    entries = _entries(policy)
    links = _symlinks(policy)
    _check(_libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC), "unshare")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    # opened in the new namespace (a bind mount's source must be in it), before the new root hides /tmp
    fds = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in entries}
    placed = [(os.open(src, os.O_PATH | os.O_CLOEXEC), dst) for src, dst in policy.placed]
    _mount("tmpfs", _NEW_ROOT, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=4m")
    hidden = [os.path.realpath(p) for p in policy.hidden]
    for path in sorted([*entries, *hidden], key=len):  # parents before what is mounted inside them
        target = _NEW_ROOT + path
        if path in hidden:
            if os.path.isdir(target):  # only where a bind above shows it
                _mount("tmpfs", target, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "mode=0755,size=4m")
            continue
        kind, readonly = entries[path]
        if policy.scratch_bytes is not None and path == os.path.realpath(policy.scratch or "/nonexistent"):
            os.makedirs(target, 0o755, exist_ok=True)
            owner = policy.uid if policy.uid is not None else 0
            _mount("tmpfs", target, "tmpfs", _MS_NOSUID | _MS_NODEV,
                   f"mode=0700,uid={owner},gid={owner},size={policy.scratch_bytes}")
            continue
        if stat.S_ISDIR(os.fstat(fds[path]).st_mode):
            os.makedirs(target, 0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            if not os.path.exists(target):
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(f"/proc/self/fd/{fds[path]}", target, None, _MS_BIND)
        flags = _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _mount_flags(target) | (_MS_RDONLY if readonly else 0)
        _mount(None, target, None, flags if kind == "device" else flags | _MS_NODEV)
    for fd, dst in placed:
        os.makedirs(os.path.dirname(_NEW_ROOT + dst), 0o755, exist_ok=True)
        os.close(os.open(_NEW_ROOT + dst, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(f"/proc/self/fd/{fd}", _NEW_ROOT + dst, None, _MS_BIND)
        _mount(None, _NEW_ROOT + dst, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
        os.close(fd)
    for fd in fds.values():
        os.close(fd)
    for path in policy.listed:
        os.makedirs(_NEW_ROOT + path, 0o755, exist_ok=True)
    for link, dest in links.items():
        if not os.path.lexists(_NEW_ROOT + link):
            os.makedirs(os.path.dirname(_NEW_ROOT + link), 0o755, exist_ok=True)
            os.symlink(dest, _NEW_ROOT + link)
    os.makedirs(_NEW_ROOT + "/proc", 0o755, exist_ok=True)
    _mount("proc", _NEW_ROOT + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "hidepid=invisible")
    os.makedirs(_NEW_ROOT + "/dev/shm", 0o755, exist_ok=True)
    _mount("tmpfs", _NEW_ROOT + "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777,size=64m")
    for name, dest in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                       ("stderr", "/proc/self/fd/2")):
        with contextlib.suppress(FileExistsError):
            os.symlink(dest, f"{_NEW_ROOT}/dev/{name}")
    os.chdir(_NEW_ROOT)
    _check(_libc.syscall(_SYS_PIVOT_ROOT[platform.machine()], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", _MNT_DETACH), "detach the old root")
    os.chdir("/")
    _mount(None, "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise OSError(f"still able to become root after switching to uid {uid}")


def _proc_paths(private_root: bool) -> list[str]:
    """What of /proc it reads: in a private root, its own /proc (only its own processes); else
    its own /proc/<pid> and /proc's files that are no process's (a pid's fd list, status, ...
    would be readable for the same uid without ptrace rights)."""
    if private_root:
        return ["/proc"]
    return ["/proc/self", *(f"/proc/{name}" for name in os.listdir("/proc")
                            if not name.isdigit() and name not in ("self", "thread-self"))]


def _landlock(policy: Policy, private_root: bool) -> None:
    from landlockpy import AccessFS, AccessNet, Ruleset, Scope, fs_for_abi

    handled = fs_for_abi(policy.landlock_abi)
    read_dir = AccessFS.READ_FILE | AccessFS.READ_DIR | AccessFS.EXECUTE
    file_rights = AccessFS.EXECUTE | AccessFS.WRITE_FILE | AccessFS.READ_FILE | AccessFS.TRUNCATE | AccessFS.IOCTL_DEV
    device = AccessFS.READ_FILE | AccessFS.WRITE_FILE | AccessFS.IOCTL_DEV
    with Ruleset(handled_fs=handled, handled_net=AccessNet.NONE,
                 scoped=Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET) as ruleset:
        placed = [dst for _src, dst in policy.placed] if private_root else []
        rules = [(p, read_dir) for p in (*policy.read, *placed, *_proc_paths(private_root))]
        rules += [(p, AccessFS.READ_DIR) for p in policy.listed]
        rules += [(p, handled) for p in (*policy.write, *(["/dev/shm"] if private_root else []))]
        rules += [(p, device) for p in policy.devices]
        for path, access in rules:
            if not os.path.exists(path):
                continue
            if not os.path.isdir(path):
                access &= file_rights
            ruleset.allow_path(path, access)
        ruleset.restrict()  # also sets no_new_privs: no setuid binary or file capability gives anything back


def _join_cgroups(policy: Policy) -> None:
    for procs in policy.cgroup_procs:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))


def _set_rlimits(policy: Policy) -> None:
    for name, value in policy.rlimits:
        limit = getattr(resource, name)
        hard = resource.getrlimit(limit)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (value, value))


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (set after the uid switch, which clears it); at once if it already has."""
    _check(_libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        raise OSError("the process that started it is gone")


def confine(policy: Policy) -> None:
    """Confine this process as ``policy`` says (irreversibly)."""
    parent = os.getppid()
    _join_cgroups(policy)
    private_root = policy.uid is not None
    if private_root:
        _private_root(policy)
        _drop_to(policy.uid)  # type: ignore[arg-type]
    if policy.landlock_abi:
        _landlock(policy, private_root)
    os.chdir(policy.cwd)
    _set_rlimits(policy)
    if policy.die_with_parent:
        _die_with_parent(parent)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] != "--policy" or argv[2] != "--":
        print("usage: python -m wallaroo_pulumi.runtime.sandbox.confine --policy JSON -- CMD [ARGS...]", file=sys.stderr)
        return 2
    command = argv[3:]
    try:
        env = json.loads(os.environ.pop(ENV_VAR))
        confine(Policy.from_json(argv[1]))
    except Exception as exc:  # noqa: BLE001 - whatever failed, the command must not run
        print(f"sandbox: could not confine {command[0]}: {exc}", file=sys.stderr)
        return EXIT_NOT_CONFINED
    try:
        os.execve(command[0], command, env)
    except OSError as exc:
        print(f"sandbox: could not run {command[0]}: {exc}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
