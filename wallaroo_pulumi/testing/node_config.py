"""The files a test node's containerd and kubelet start from (`testing/real_node.py`): where they
keep their state, how they reach each other and the API server, and the settings this machine
needs (cgroup v1 with cgroupfs, no CAP_SYS_RESOURCE, a busy shared disk)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.testing.node_images import PAUSE_IMAGE
from wallaroo_pulumi.testing.node_network import CNI_BIN_DIR

RUNC = "/usr/sbin/runc"


def write_containerd_config(w: Path, socket: Path) -> None:
    """`w/containerd.toml`: containerd with its root, state and socket under `w`, the CRI on runc and CNI."""
    (w / "containerd.toml").write_text(f"""version = 2
root = "{w / 'containerd' / 'root'}"
state = "{w / 'containerd' / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{w / 'containerd.ttrpc.sock'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{w / 'containerd' / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # CAP_SYS_RESOURCE is missing here: an oom_score_adj below this process's own is refused
  restrict_oom_score_adj = true
  disable_apparmor = true
  # pods' network namespaces under the state dir (not /run/netns), unmounted with the rest
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{w / 'runc'}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{w / 'cni' / 'net.d'}"
    max_conf_num = 1
""")


def write_kubelet_files(w: Path, *, server: str, ca: str, token: str, socket: Path, cgroup_root: str,
                        pods_pids_limit: int) -> None:
    """`w/kubelet.kubeconfig` (the node's token for the API server at `server`, trusting `ca`),
    `w/kubelet.yaml` and an empty resolv.conf: a kubelet on containerd's `socket`, its pods'
    cgroups under `cgroup_root`."""
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "plane", "cluster": {"server": server,
                                                   "certificate-authority-data": base64.b64encode(ca.encode()).decode()}}],
        "users": [{"name": "node", "user": {"token": token}}],
        "contexts": [{"name": "node", "context": {"cluster": "plane", "user": "node"}}],
    }
    (w / "kubelet.kubeconfig").write_text(json.dumps(kubeconfig))
    (w / "kubelet.kubeconfig").chmod(0o600)
    (w / "resolv.conf").write_text("")  # pods resolve nothing: no DNS on this network
    endpoint = f"unix://{socket}"
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # cgroup v1 (this machine): refused by default since 1.35; no systemd, so cgroupfs
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": endpoint, "imageServiceEndpoint": endpoint,
        "address": "127.0.0.1", "port": free_port(), "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},  # no client can authenticate to it anyway
        "podLogsDir": str(w / "pod-logs"), "resolvConf": str(w / "resolv.conf"),
        "clusterDomain": "cluster.local",
        # a busy shared disk must not evict the tests' pods; the pods' own limits still hold
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "podPidsLimit": pods_pids_limit,
        "oomScoreAdj": 0,  # -999 (the default) is refused without CAP_SYS_RESOURCE
        "failSwapOn": True, "serializeImagePulls": False, "maxPods": 30,
        "syncFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
        "volumeStatsAggPeriod": "10s",  # how soon a full scratch emptyDir is seen (and its pod evicted)
    }
    (w / "kubelet.yaml").write_text(json.dumps(config, indent=2))
