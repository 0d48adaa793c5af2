"""What this host's kernel offers the sandbox, detected once at start: the Landlock ABI and, as
root, the capabilities to give each worker a uid and a private root of its own."""

from __future__ import annotations

import os
from dataclasses import dataclass

_CAP_SETGID, _CAP_SETUID, _CAP_SYS_ADMIN = 6, 7, 21
#: Landlock ABI that scopes signals (and abstract unix sockets) to the sandbox: kernel 6.12.
SIGNAL_SCOPE_ABI = 6


def landlock_abi() -> int:
    """The kernel's Landlock ABI; 0 when there is none (old kernel, disabled, or a seccomp filter)."""
    try:
        import landlockpy

        return landlockpy.abi_version()
    except Exception:  # noqa: BLE001 - EPERM from a container's seccomp profile means none too
        return 0


def effective_caps() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class Support:
    landlock_abi: int
    root: bool
    caps: int = 0

    @classmethod
    def detect(cls) -> Support:
        return cls(landlock_abi=landlock_abi(), root=os.geteuid() == 0, caps=effective_caps())

    def _has(self, *caps: int) -> bool:
        return all(self.caps >> cap & 1 for cap in caps)

    @property
    def private_root(self) -> bool:
        """Root that may switch uids and build a mount namespace: each worker gets a uid and a root of its own."""
        return self.root and self._has(_CAP_SETUID, _CAP_SETGID, _CAP_SYS_ADMIN)

    def mechanisms(self) -> dict[str, bool]:
        """Every mechanism the sandbox needs on this host, and whether the kernel offers it."""
        abi = self.landlock_abi
        if self.root:
            return {
                "a uid of its own per worker, without capabilities (CAP_SETUID, CAP_SETGID)": self._has(_CAP_SETUID, _CAP_SETGID),
                "a private root and /proc per worker (mount namespace, CAP_SYS_ADMIN)": self._has(_CAP_SYS_ADMIN),
                f"Landlock file rules (kernel reports ABI {abi})": abi >= 1,
            }
        return {
            f"Landlock file, ptrace and /proc rules (kernel reports ABI {abi})": abi >= 1,
            f"Landlock signal scoping (ABI {SIGNAL_SCOPE_ABI}, Linux 6.12; kernel reports ABI {abi})": abi >= SIGNAL_SCOPE_ABI,
        }

    @property
    def missing(self) -> list[str]:
        return [name for name, ok in self.mechanisms().items() if not ok]
