"""A real Kubernetes node on this machine for a `LocalControlPlane` (issue 22): Debian's containerd
(runc, CRI) with its root, state and socket under `workdir`, a kubelet registered with the plane's
API server as `system:node:<name>`, pods on a loopback-only bridge (`node_network`), the pause
image and the images asked for imported into containerd (`node_images`). Unlike a kwok node, its
pods really run: as their securityContext says, in cgroups of their own under `cgroup_root`.

    with LocalControlPlane(tmp / "plane", nodes=(), real_nodes=("node-0",)) as plane, \\
            RealNode(plane, tmp / "node", images=["localhost/wallaroo-pulumi-runtime:test"]) as node:
        ...  # pods scheduled to node.name run; node.pod_cgroup(pod), node.container_pid(...)

Needs root, cgroup v1 or v2 with the cpu, memory and pids controllers, and the tools of
scripts/test-setup (containerd, runc, /usr/lib/cni, iptables; kubelet and pause from
scripts/k8s-tools). `stop()` (also after a failed start) deletes what the tests left on the node
through the API, then stops the kubelet, kills what is left of the pods, stops containerd and
removes the cgroups, mounts, network namespaces, bridge and DNAT rule it made."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Namespace, Node, Pod

from wallaroo_pulumi.testing.control_plane import STORAGE_CLASS, ControlPlaneError, LocalControlPlane
from wallaroo_pulumi.testing.node_config import RUNC, write_containerd_config, write_kubelet_files
from wallaroo_pulumi.testing.node_images import ctr_import, export_podman_image, pause_archive
from wallaroo_pulumi.testing.node_network import CNI_BIN_DIR, PodNetwork
from wallaroo_pulumi.testing.processes import Harness, ServerProcess, die_with_parent

CGROUP_FS = Path("/sys/fs/cgroup")
SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}


def _mounts() -> dict[str, Path]:
    """Every mounted cgroup hierarchy by what /proc/<pid>/cgroup calls it: the v1 controllers'
    (e.g. 'cpu,cpuacct' where co-mounted), 'name=systemd', and '' for the v2 tree."""
    found = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        rest = fields[fields.index("-") + 1:]
        if rest[0] == "cgroup2":
            found[""] = Path(fields[4])
        elif rest[0] == "cgroup":
            names = [o for o in rest[2].split(",") if o not in ("rw", "ro") and "=" not in o or o.startswith("name=")]
            found[",".join(names)] = Path(fields[4])
    return found


def _hierarchies() -> list[Path]:
    return list(_mounts().values())


class RealNode(Harness):
    error = ControlPlaneError

    def __init__(self, plane: LocalControlPlane, workdir: Path, *, name: str | None = None,
                 images: Iterable[str] = (), bin_dir: Path | None = None, pods_pids_limit: int = 1024,
                 local_volumes: int = 4, ready_timeout_s: float = 120) -> None:
        self.plane = plane
        self.name = name or next(iter(plane.node_tokens), "")
        if self.name not in plane.node_tokens:
            raise ControlPlaneError(f"RealNode: the control plane has no token for node {self.name!r}: "
                                    "start it with real_nodes=(name,)")
        self.workdir = Path(workdir)
        self.images = tuple(images)
        self.pods_pids_limit = pods_pids_limit
        self.local_volumes = local_volumes
        self.ready_timeout_s = ready_timeout_s
        self.bins = self._find_binaries(bin_dir)
        #: under every hierarchy: this node's pods' cgroups only (another node, another session's, apart)
        self.cgroup_root = f"/wallaroo-node-{secrets.token_hex(4)}"
        self.socket = self.workdir / "containerd.sock"
        self.network: PodNetwork | None = None
        super().__init__(self.workdir / "logs", preexec_fn=die_with_parent)
        self.timings: dict[str, float] = {}

    @staticmethod
    def _find_binaries(bin_dir: Path | None) -> dict[str, str]:
        """kubelet and pause from `bin_dir`, else PATH; containerd, ctr and runc from PATH."""
        path = os.pathsep.join(p for p in (str(bin_dir) if bin_dir else "", os.environ.get("PATH", "")) if p)
        found = {b: shutil.which(b, path=path) for b in ("kubelet", "pause", "containerd", "ctr", "iptables")}
        if not Path(RUNC).is_file():
            found["runc"] = None
        if not (CNI_BIN_DIR / "bridge").is_file():
            found["CNI plugins (/usr/lib/cni/bridge)"] = None
        missing = [b for b, p in found.items() if not p]
        if missing:
            raise ControlPlaneError(f"RealNode: not found: {', '.join(missing)}. scripts/test-setup installs "
                                    "containerd, runc, the CNI plugins and iptables (Debian) and builds kubelet "
                                    "and pause (scripts/k8s-tools)")
        return {b: str(p) for b, p in found.items() if p}

    # -- lifecycle (Harness: start(), stop(), with) ----------------------------------
    def start(self) -> RealNode:
        if os.geteuid() != 0:
            raise ControlPlaneError("RealNode: needs root (containerd, cgroups, a bridge)")
        return super().start()

    def _timed(self, what: str, started: float) -> None:
        self.timings[what] = round(time.monotonic() - started, 1)

    def _start(self) -> None:
        self._make_cgroup_root()
        api_port = int(self.plane.server.rsplit(":", 1)[1])
        self.network = PodNetwork(self.workdir / "cni", api_port)
        self.network.create()

        t = time.monotonic()
        write_containerd_config(self.workdir, self.socket)
        containerd = self.spawn("containerd", [self.bins["containerd"], "--config",
                                                str(self.workdir / "containerd.toml")])
        self._wait("containerd", [containerd], lambda: self._ctr("version").returncode == 0, 30)
        self._timed("containerd", t)

        t = time.monotonic()
        archives = self.workdir / "images"
        archives.mkdir(exist_ok=True)
        ctr_import(self.socket, pause_archive(Path(self.bins["pause"]), archives / "pause.tar"))
        for i, image in enumerate(self.images):
            archive = export_podman_image(image, archives / f"image-{i}.tar")
            ctr_import(self.socket, archive)
            archive.unlink()
        self._timed("images", t)

        t = time.monotonic()
        write_kubelet_files(self.workdir, server=self.plane.server, token=self.plane.node_tokens[self.name],
                            ca=(self.plane.workdir / "pki" / "ca.crt").read_text(), socket=self.socket,
                            cgroup_root=self.cgroup_root, pods_pids_limit=self.pods_pids_limit)
        kubelet = self.spawn("kubelet", [
            self.bins["kubelet"], f"--config={self.workdir / 'kubelet.yaml'}",
            f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}", f"--root-dir={self.workdir / 'kubelet'}",
            f"--hostname-override={self.name}", "--node-labels=wallaroo.ai/node=real", "--v=1"])
        self._wait("the kubelet's node Ready", [containerd, kubelet], self._ready, self.ready_timeout_s)
        self._timed("kubelet", t)
        self._offer_volumes()

    def _wait(self, what: str, parts: list[ServerProcess], ready: Callable[[], bool], timeout_s: float) -> None:
        self.wait(f"RealNode: {what}", parts, ready, timeout_s, not_yet=(ApiError, OSError, ValueError),
                  interval=0.3, tail=40)

    def _ready(self) -> bool:
        node = self.plane.client().get(Node, self.name)
        return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))

    def _offer_volumes(self) -> None:
        """The default StorageClass: `local` volumes on this node (folders under the workdir, root's
        as a fresh disk is; the kubelet gives them to a pod's fsGroup), bound as claims come."""
        self.plane.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                          "metadata": {"name": STORAGE_CLASS,
                                       "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                          "provisioner": "kubernetes.io/no-provisioner", "reclaimPolicy": "Retain",
                          "volumeBindingMode": "Immediate"})
        for i in range(self.local_volumes):
            folder = self.workdir / "volumes" / f"pv-{i}"
            folder.mkdir(parents=True, mode=0o755)
            self.plane.apply({
                "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{self.name}-local-{i}"},
                "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                         "local": {"path": str(folder)},
                         "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                             {"key": "kubernetes.io/hostname", "operator": "In", "values": [self.name]}]}]}}}})

    # -- configuration ----------------------------------------------------------------------
    def _make_cgroup_root(self) -> None:
        for hierarchy in _hierarchies():
            path = hierarchy / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            if (hierarchy / "cpuset.cpus").exists() and not (hierarchy / "cgroup.controllers").exists():
                for knob in ("cpuset.cpus", "cpuset.mems"):  # v1: a new cpuset is empty, its children too
                    (path / knob).write_text((hierarchy / knob).read_text())

    # -- what the tests read from the node's side ---------------------------------------------
    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.bins["ctr"], "--address", str(self.socket), "--namespace", "k8s.io", *args],
                              capture_output=True, text=True)

    def container_pid(self, pod: Pod, container: str | None = None) -> int:
        """The host pid of a pod's container's first process (from its status's containerd id)."""
        statuses = pod.status.containerStatuses or []
        status = next(s for s in statuses if container is None or s.name == container)
        if not status.containerID:
            raise LookupError(f"pod {pod.metadata.name}: container {status.name} has no id yet")
        task = self._ctr("tasks", "ls")
        cid = status.containerID.split("://", 1)[1]
        for line in task.stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                return int(fields[1])
        raise LookupError(f"pod {pod.metadata.name}: no running task {cid}")

    def cgroup_dir(self, pid: int, controller: str) -> Path:
        """Where a process sits in a v1 controller's hierarchy ('memory', 'pids', ...; '' for the v2 tree)."""
        mounts = _mounts()
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (controller in controllers.split(",") if controller else controllers == "") and controllers in mounts:
                return mounts[controllers] / path.lstrip("/")
        raise LookupError(f"process {pid}: not in the {controller or 'v2'} hierarchy")

    def pod_cgroups(self) -> list[str]:
        """The pod cgroups under this node's root now (memory hierarchy): one per pod running."""
        root = next(path for names, path in _mounts().items() if "memory" in names.split(",")) / self.cgroup_root.lstrip("/")
        return sorted(p.name for p in root.rglob("pod*") if p.is_dir())

    def containers(self) -> list[str]:
        """Every container containerd holds (pause containers of sandboxes included)."""
        return [line.split()[0] for line in self._ctr("containers", "ls").stdout.splitlines()[1:] if line.strip()]

    def pod_logs(self, namespace: str, chars: int = 3000) -> str:
        """The tail of every container log of the namespace's pods on this node (what `kubectl logs` reads)."""
        out = []
        for path in sorted((self.workdir / "pod-logs").glob(f"{namespace}_*/*/*.log")):
            with contextlib.suppress(OSError):
                out.append(f"--- {path.parent.parent.name}/{path.parent.name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    def log(self, name: str = "kubelet", lines: int = 60) -> str:
        for proc in self.servers:
            if proc.name == name:
                return proc.tail(lines)
        return ""

    # -- clean-up --------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Leave nothing behind; safe to call twice. What could not be removed (also logged in
        `workdir/logs/cleanup.log`)."""
        problems: list[str] = []
        kubelet = next((p for p in self.servers if p.name == "kubelet"), None)
        if kubelet is not None and kubelet.proc.poll() is None:
            problems += self._drain()
        while self.servers and self.servers[-1].name != "containerd":
            self.servers.pop().stop()
        problems += self._kill_containers()
        while self.servers:
            self.servers.pop().stop()
        self._kill_shims()
        problems += self._unmount()
        problems += self._remove_cgroups()
        if self.network is not None:
            problems += self.network.remove()
            self.network = None
        if problems:
            (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
            with (self.workdir / "logs" / "cleanup.log").open("a") as out:
                out.write("\n".join(problems) + "\n")
        return problems

    def _drain(self, timeout_s: float = 60) -> list[str]:
        """Delete what the tests left (their namespaces, every pod on the node) and let the kubelet
        stop the pods as it should (CNI DEL, volumes unmounted)."""
        client = self.plane.client()
        try:
            self._delete_pods(client)  # at once: a namespace's deletion would grant each its grace period
            for ns in client.list(Namespace):
                if ns.metadata.name not in SYSTEM_NAMESPACES and not ns.metadata.deletionTimestamp:
                    client.delete(Namespace, ns.metadata.name)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                left = self._delete_pods(client)
                if not left and not self.containers():
                    return []
                time.sleep(1)
        except (ApiError, OSError) as exc:
            return [f"drain: {exc}"]
        return [f"drain: pods still on the node after {timeout_s:.0f}s: {self.containers()}"]

    def _delete_pods(self, client: Client) -> list[Pod]:
        """Delete every pod bound to this node, without grace; those there were."""
        pods = list(client.list(Pod, namespace="*", fields={"spec.nodeName": self.name}))
        for pod in pods:
            with contextlib.suppress(ApiError):
                client.delete(Pod, pod.metadata.name, namespace=pod.metadata.namespace, grace_period=0)
        return pods

    def _kill_containers(self) -> list[str]:
        if not self.socket.exists():
            return []
        for cid in self.containers():
            self._ctr("tasks", "kill", "--signal", "SIGKILL", cid)
        time.sleep(0.5)
        self._kill_cgroup_members(signal.SIGKILL)
        problems = []
        for cid in self.containers():
            self._ctr("tasks", "delete", "--force", cid)
            done = self._ctr("containers", "delete", cid)
            if done.returncode != 0:
                problems.append(f"container {cid}: {done.stderr.strip()}")
        return problems

    def _kill_cgroup_members(self, sig: int) -> None:
        for hierarchy in _hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            for procs in root.rglob("cgroup.procs") if root.is_dir() else []:
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), sig)

    def _kill_shims(self) -> None:
        """containerd's shims outlive it: those started by this containerd (their -address is our socket)."""
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(self.socket).encode() in argv:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)

    def _unmount(self) -> list[str]:
        """Every mount under the workdir (rootfs overlays, sandbox /dev/shm, Secret tmpfs), deepest first."""
        prefix = str(self.workdir.resolve()) + "/"
        problems = []
        for _ in range(3):
            points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
            mine = sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True)
            if not mine:
                return []
            for point in mine:
                done = subprocess.run(["umount", "-l", point], capture_output=True, text=True)
                if done.returncode != 0:
                    problems.append(f"umount {point}: {done.stderr.strip()}")
        return problems

    def _remove_cgroups(self) -> list[str]:
        problems = []
        for hierarchy in _hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            if not root.is_dir():
                continue
            for _ in range(20):
                dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
                for d in [*dirs, root]:
                    with contextlib.suppress(OSError):
                        d.rmdir()
                if not root.exists():
                    break
                self._kill_cgroup_members(signal.SIGKILL)
                time.sleep(0.25)
            else:
                problems.append(f"cgroup {root}: not removable")
        return problems
