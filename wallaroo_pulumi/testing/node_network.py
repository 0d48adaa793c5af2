"""The real node's pod network, kept on this machine: a Linux bridge with a /24 of its own, pods
attached by Debian's CNI `bridge` + `host-local` plugins with no default route (only the bridge's
subnet and the Service range are reachable from a pod), and the API server's Service address
(10.96.0.1:443, what every pod's KUBERNETES_SERVICE_HOST names) DNATed to the API server on
127.0.0.1 for pods of this bridge only (`route_localnet` on the bridge). `remove()` undoes it all,
the network namespaces a killed sandbox left behind included."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import subprocess
from pathlib import Path

CNI_BIN_DIR = Path("/usr/lib/cni")
NETNS_DIR = Path("/run/netns")
#: The control plane's `--service-cluster-ip-range` (LocalControlPlane): its first address is the API server's Service.
SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/16")
API_SERVICE_IP = "10.96.0.1"
BRIDGE_PREFIX = "wlrk"
#: Where pod subnets are picked from: one free /24 per node.
POOL = ipaddress.ip_network("10.250.0.0/16")


class NetworkError(RuntimeError):
    """A command setting up or removing the pod network failed."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def _used_networks() -> list[ipaddress.IPv4Network]:
    routes = _run("ip", "-4", "-j", "route", "show", "table", "all").stdout
    nets = []
    for route in json.loads(routes or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            try:
                nets.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                continue
    return nets


class PodNetwork:
    def __init__(self, cni_dir: Path, api_port: int) -> None:
        self.bridge = f"{BRIDGE_PREFIX}{secrets.token_hex(4)}"  # at most 15 characters, unique per node
        self.cni_dir = cni_dir
        self.api_port = api_port
        self.subnet = self._free_subnet()
        self.gateway = str(next(self.subnet.hosts()))
        self._forward_was: str | None = None
        self._dnat: list[str] = []

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        used = _used_networks()
        candidates = list(POOL.subnets(new_prefix=24))
        random.shuffle(candidates)
        for net in candidates:
            if not any(net.overlaps(u) for u in used):
                return net
        raise NetworkError(f"no free /24 in {POOL} for the pod bridge")

    # -- up ---------------------------------------------------------------------------
    def create(self) -> None:
        """The bridge (up, with the gateway address), the CNI config containerd reads, the DNAT rule."""
        self._forward_was = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/route_localnet").write_text("1")
        self._dnat = ["PREROUTING", "-i", self.bridge, "-d", f"{API_SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
                      "-j", "DNAT", "--to-destination", f"127.0.0.1:{self.api_port}",
                      "-m", "comment", "--comment", f"wallaroo test node {self.bridge}"]
        _run("iptables", "-t", "nat", "-A", *self._dnat)
        conf = self.cni_dir / "net.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "10-wallaroo.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "wallaroo-pods",
            "plugins": [{
                "type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(self.cni_dir / "ipam"),
                         "ranges": [[{"subnet": str(self.subnet), "gateway": self.gateway}]],
                         # no default route: a pod reaches its bridge's subnet and the Service range, nothing else
                         "routes": [{"dst": str(SERVICE_RANGE)}]},
            }],
        }, indent=2))

    # -- what is on it ------------------------------------------------------------------
    def ports(self) -> list[str]:
        """The interfaces (pods' veth ends) attached to the bridge now."""
        brif = Path(f"/sys/class/net/{self.bridge}/brif")
        return sorted(os.listdir(brif)) if brif.is_dir() else []

    def namespaces(self) -> list[str]:
        """The network namespaces in /run/netns with an address in this node's subnet (its pods')."""
        mine = []
        for name in sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else []:
            addrs = _run("ip", "-n", name, "-4", "-j", "addr", "show", check=False).stdout
            try:
                infos = json.loads(addrs or "[]")
            except ValueError:
                continue
            if any(ipaddress.ip_address(a["local"]) in self.subnet
                   for i in infos for a in i.get("addr_info", []) if "local" in a):
                mine.append(name)
        return mine

    # -- down -------------------------------------------------------------------------
    def remove(self) -> list[str]:
        """Undo everything (each step even when another failed); what could not be undone."""
        problems = []
        for name in self.namespaces():  # a sandbox killed without CNI DEL
            done = _run("ip", "netns", "delete", name, check=False)
            if done.returncode != 0:
                problems.append(f"netns {name}: {done.stderr.strip()}")
        if Path(f"/sys/class/net/{self.bridge}").exists():
            done = _run("ip", "link", "delete", self.bridge, check=False)
            if done.returncode != 0:
                problems.append(f"bridge {self.bridge}: {done.stderr.strip()}")
        if self._dnat:
            done = _run("iptables", "-t", "nat", "-D", *self._dnat, check=False)
            if done.returncode != 0:
                problems.append(f"iptables DNAT rule: {done.stderr.strip()}")
            self._dnat = []
        if self._forward_was == "0":  # the bridge plugin turns forwarding on; put it back
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0")
        if not any(name.startswith(BRIDGE_PREFIX) for name in os.listdir("/sys/class/net")):
            remove_kubelet_chains()  # the last node of this machine gone: the kubelet's chains too
        return problems


#: What a kubelet adds to iptables (pkg/kubelet/kubelet_network_linux.go): a hint chain, a canary,
#: and KUBE-FIREWALL, which drops packets to 127/8 from elsewhere unless DNATed (what keeps
#: `route_localnet` safe). Needed while a node runs; removed by the last one to stop.
_KUBELET_RULES = [("iptables", "filter", ["-D", "INPUT", "-j", "KUBE-FIREWALL"]),
                  ("iptables", "filter", ["-D", "OUTPUT", "-j", "KUBE-FIREWALL"]),
                  ("iptables", "filter", ["-F", "KUBE-FIREWALL"]), ("iptables", "filter", ["-X", "KUBE-FIREWALL"])]
_KUBELET_RULES += [(cmd, table, ["-X", "KUBE-KUBELET-CANARY"])
                   for cmd in ("iptables", "ip6tables") for table in ("mangle", "nat", "filter")]
_KUBELET_RULES += [(cmd, "mangle", ["-X", "KUBE-IPTABLES-HINT"]) for cmd in ("iptables", "ip6tables")]


def remove_kubelet_chains() -> None:
    for cmd, table, args in _KUBELET_RULES:
        _run(cmd, "-t", table, *args, check=False)  # absent already: nothing to do
