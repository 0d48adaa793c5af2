"""A test-only kubelet for sidekick pods on kwok nodes (kwok runs no container; D35).

    with PodRunner(cluster, "my-namespace"):
        ...  # every Running pod labelled app.kubernetes.io/component=sidekick runs as a local process

For each such pod it gives the pod an address of its own on loopback (127.77.x.y: all of 127/8 is
loopback on Linux) in the pod's status, in place of kwok's, and starts the container's command
(`python` being this interpreter) with the pod's env as a kubelet resolves it (values, the pod's
IP and name, `secretKeyRef` and `envFrom` Secrets read from the API server), `$(VAR)` expanded in
its arguments, and each emptyDir mount a folder of its own. A process that exits has its pod
deleted, so the ReplicaSet replaces it; a pod that is deleted has its process killed."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Node, Pod, Secret
from lightkube.types import PatchType

from wallaroo_pulumi.testing.kube_cluster import KubeCluster
from wallaroo_pulumi.testing.pod_logs import PodLogServer

SIDEKICK_PODS = {"app.kubernetes.io/component": "sidekick"}


class PodRunner:
    def __init__(self, cluster: KubeCluster, namespace: str, *, labels: dict[str, str] | None = None,
                 workdir: Path | None = None, poll_s: float = 0.2, python: str | None = None) -> None:
        self.client: Client = cluster.client()
        self.python = python or sys.executable  # what a container's `python` is
        self.namespace = namespace
        self.labels = labels or SIDEKICK_PODS
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pod-runner-"))
        self.poll_s = poll_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # pod name -> its container's process
        self.ips: dict[str, str] = {}
        self._count = 0
        self._stop = threading.Event()
        self._held = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-runner", daemon=True)
        self.errors: list[str] = []
        self.ended: dict[str, int] = {}  # pod name -> exit code, of pods that are never restarted (a Job's)
        self.logs: PodLogServer | None = None

    def serve_logs(self, cert: Path, key: Path) -> None:
        """Answer `pods/log` for the pods run here, as their kubelet: every node's kubelet port is this server's."""
        self.logs = PodLogServer(self._log_of, cert, key)
        for node in self.client.list(Node):
            self.client.patch(Node.Status, node.metadata.name,
                              {"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": self.logs.port}}}},
                              patch_type=PatchType.MERGE)

    def _log_of(self, pod: str) -> tuple[Path, Callable[[], bool]] | None:
        proc = self.procs.get(pod)
        if proc is None:
            return None
        return self.workdir / f"{pod}.log", lambda: proc.poll() is None

    def __enter__(self) -> PodRunner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for name in list(self.procs):
            self._kill(name)
        if self.logs is not None:
            self.logs.close()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Notice nothing meanwhile (a kubelet slow to report): a killed process keeps its pod Ready."""
        self._held.set()
        try:
            yield
        finally:
            self._held.clear()

    def kill(self, pod: str) -> None:
        """SIGKILL a pod's process, as if its container crashed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[pod].pid, signal.SIGKILL)

    # -- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._held.is_set():
                    self._once()
            except Exception as exc:  # noqa: BLE001 - the API server busy: next round; shown if a test fails
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_s)

    def _once(self) -> None:
        pods = {p.metadata.name: p for p in self.client.list(Pod, namespace=self.namespace, labels=self.labels)}
        for name in list(self.procs):
            pod = pods.get(name)
            if pod is None or pod.metadata.deletionTimestamp is not None:
                self._kill(name)
            elif self.procs[name].poll() is not None and pod.spec.restartPolicy == "Never":
                if name not in self.ended:  # a Job's pod: it ends with its process's exit code
                    self.ended[name] = self.procs[name].returncode
                    self._report_end(pod, self.procs[name].returncode)
            elif self.procs[name].poll() is not None:  # crashed: the pod goes, its ReplicaSet makes another
                self._kill(name)
                with contextlib.suppress(ApiError):
                    self.client.delete(Pod, name, namespace=self.namespace, grace_period=0)
        for name, pod in pods.items():
            if (name not in self.procs and pod.metadata.deletionTimestamp is None and pod.status is not None
                    and pod.status.phase == "Running" and pod.spec.nodeName):
                self._start(pod)

    def _report_end(self, pod: Pod, code: int) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        container = pod.spec.containers[0]
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "finishedAt": now,
                      "startedAt": now}
        status = {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [{
            "name": container.name, "image": container.image, "ready": False, "restartCount": 0,
            "state": {"terminated": terminated}}]}
        self.client.patch(Pod.Status, pod.metadata.name, {"status": status}, namespace=self.namespace,
                          patch_type=PatchType.MERGE)

    def _start(self, pod: Pod) -> None:
        name = pod.metadata.name
        ip = self.ips.get(name)
        if ip is None:
            self._count += 1
            ip = self.ips[name] = f"127.77.{self._count // 250}.{self._count % 250 + 1}"
        self.client.patch(Pod.Status, name, {"status": {"podIP": ip, "podIPs": [{"ip": ip}]}},
                          namespace=self.namespace, patch_type=PatchType.MERGE)
        container = pod.spec.containers[0]
        root = self.workdir / name
        mounts = {m.mountPath: root / m.name for m in container.volumeMounts or []
                  if any(v.name == m.name and v.emptyDir is not None for v in pod.spec.volumes or [])}
        for folder in mounts.values():
            folder.mkdir(parents=True, exist_ok=True)
        mounts.update(self._secret_mounts(pod, container, root))

        def local(value: str) -> str:
            for mount, folder in mounts.items():
                value = re.sub(rf"^{re.escape(mount)}(?=/|$)", str(folder), value)
            return value

        env = {"PATH": os.environ.get("PATH", os.defpath)}
        for source in container.envFrom or []:
            if source.secretRef is not None:
                env.update(self._secret(source.secretRef.name))
        for var in container.env or []:
            env[var.name] = local(self._value(var, pod, ip))
        argv = [*(container.command or []), *(container.args or [])]
        argv = [local(re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a)) for a in argv]
        if argv and argv[0] == "python":
            argv[0] = self.python
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(argv, env=env, cwd=str(root), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def _secret_mounts(self, pod: Pod, container: Any, root: Path) -> dict[str, Path]:
        """Each Secret volume's files in a folder of the pod's (its owner alone reads them); a
        `subPath` mount, the one file."""
        secrets = {v.name: v.secret.secretName for v in pod.spec.volumes or [] if v.secret is not None}
        mounts: dict[str, Path] = {}
        for m in container.volumeMounts or []:
            if m.name not in secrets:
                continue
            folder = root / f"secret-{m.name}"
            if not folder.exists():
                folder.mkdir(parents=True, mode=0o700)
                for key, value in self._secret_bytes(secrets[m.name]).items():
                    (folder / key).write_bytes(value)
                    (folder / key).chmod(0o400)
            mounts[m.mountPath] = folder / m.subPath if m.subPath else folder
        return mounts

    def _secret_bytes(self, name: str) -> dict[str, bytes]:
        secret = self.client.get(Secret, name, namespace=self.namespace)
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def _value(self, var: Any, pod: Pod, ip: str) -> str:
        if var.valueFrom is None:
            return var.value or ""
        if var.valueFrom.fieldRef is not None:
            return {"status.podIP": ip, "metadata.name": pod.metadata.name,
                    "metadata.namespace": pod.metadata.namespace}[var.valueFrom.fieldRef.fieldPath]
        ref = var.valueFrom.secretKeyRef
        return self._secret(ref.name)[ref.key]

    def _secret(self, name: str) -> dict[str, str]:
        secret = self.client.get(Secret, name, namespace=self.namespace)
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def log(self, pod: str) -> str:
        path = self.workdir / f"{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_started(self, count: int, timeout_s: float = 120) -> list[str]:
        """The pods running a process, once there are ``count`` of them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            alive = [n for n, p in self.procs.items() if p.poll() is None]
            if len(alive) >= count:
                return alive
            time.sleep(0.1)
        raise AssertionError(f"{count} pod process(es) not started within {timeout_s:.0f}s: {self.errors[-3:]}")
