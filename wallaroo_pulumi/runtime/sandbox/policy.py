"""`Policy`: what one confined process may use, as the runtime hands it to the launcher. Kept to
the standard library: the launcher imports it before anything else."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

#: The launcher's environment variable holding the confined command's whole environment (JSON).
ENV_VAR = "WALLAROO_CONFINED_ENV"


@dataclass(frozen=True)
class Policy:
    """Paths are absolute. Anything not listed is out of reach."""

    read: tuple[str, ...] = ()  # read and execute
    listed: tuple[str, ...] = ()  # folders whose names may be listed, nothing more (a source checkout's root)
    write: tuple[str, ...] = ()  # read, write, create, remove, execute
    devices: tuple[str, ...] = ()  # device nodes: read, write, ioctl
    hidden: tuple[str, ...] = ()  # in a private root: empty, even where a path above is bound (the data directory)
    cwd: str = "/"
    uid: int | None = None  # root only: run as this uid and gid, in a private root holding only the paths above
    landlock_abi: int = 0  # the Landlock ABI to enforce the paths and scopes with; 0: none
    cgroup_procs: tuple[str, ...] = ()  # root: the cgroup.procs files it joins first, before anything else
    scratch: str = ""  # its scratch folder (one of ``write``)
    scratch_bytes: int | None = None  # in a private root: the scratch is a tmpfs of this size, nothing else's space
    rlimits: tuple[tuple[str, int], ...] = ()  # ("RLIMIT_NPROC", n), ... set just before the command runs
    # in a private root: (file, path) pairs, each file shown read-only at a path of its own (a task's
    # arguments where the Wallaroo SDK reads them, /home/jovyan/arguments.json)
    placed: tuple[tuple[str, str], ...] = ()
    die_with_parent: bool = False  # killed (SIGKILL) when the process that started it dies: no orphan outlives a runtime

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Policy:
        data = json.loads(text)
        for key in ("read", "listed", "write", "devices", "hidden", "cgroup_procs"):
            data[key] = tuple(data.get(key, ()))
        data["rlimits"] = tuple((name, int(value)) for name, value in data.get("rlimits", ()))
        data["placed"] = tuple((str(src), str(dst)) for src, dst in data.get("placed", ()))
        return cls(**data)
