"""The real node: containerd, the kubelet, kube-proxy and kube-scheduler for one control plane.

What kind's node container is made of, run directly on the host (as root) inside the
slot's network namespace (`node_net.py`): containerd with its own root, state and
socket; the kubelet with its own root dir and cgroup root (cgroupfs driver, cgroup v1
allowed); a CNI bridge on `10.244.0.0/24` with host-local addresses and masquerading
towards the host; kube-proxy in iptables mode (its chains live in the namespace); and
kube-scheduler on the host side. The images from `worker-image/build.sh` (Ratline's and
the locally built pause image) are imported into containerd at start, since nothing can
be pulled here.

`ControlPlane(node="real")` starts one after the API server; `stop()` removes its
containers, cgroups, bridge and namespaces (`node_net.release`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.cluster import node_net
from tests.cluster.binaries import require
from tests.cluster.certs import Pki
from tests.cluster.cp_processes import Component, ControlPlaneError, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SCRIPT = REPO_ROOT / "worker-image" / "build.sh"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CNI_BIN = Path("/usr/lib/cni")
# Not imported at start: the worker's layers come with the examples image; the Postgres
# image only for the test of the chart's bundled database (`RealNode.import_image`).
SKIPPED_IMAGES = frozenset({"worker", "postgres"})


def build_images() -> Path:
    """Build (or reuse from the cache) the images; returns their directory of tarballs."""
    done = subprocess.run(
        ["bash", str(IMAGE_SCRIPT)], capture_output=True, text=True, check=False, timeout=3600
    )
    if done.returncode != 0:
        raise ControlPlaneError(f"{IMAGE_SCRIPT} failed:\n{done.stderr.strip()[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


class RealNode:
    """One node for the control plane whose API server listens on `slot.host_ip:port`."""

    def __init__(
        self,
        state_dir: Path,
        node_name: str,
        slot: node_net.Slot,
        spawner: Callable[[str, list[str]], Component],
    ) -> None:
        self.dir = state_dir / "node"
        self.node_name = node_name
        self.slot = slot
        self._spawn = spawner
        self._bins = require("kubelet", "kube-proxy", "kube-scheduler")
        self.socket = slot.run_dir / "containerd.sock"
        self.containerd: Component | None = None

    # -- containerd ------------------------------------------------------------------------

    def start_containerd(self) -> None:
        """containerd in the node's namespace, then the images imported into it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for d in (self.slot.var_dir, self.slot.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        cni_conf = self.slot.run_dir / "net.d"
        cni_conf.mkdir(exist_ok=True)
        (cni_conf / "10-ratline.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config = self.slot.run_dir / "containerd.toml"
        config.write_text(self._containerd_config(cni_conf))
        self.containerd = self._spawn(
            "containerd", [*self.slot.nsenter(), "containerd", "--config", str(config)]
        )

        def ready() -> None:
            self._ctr("version")

        wait_ready(self.containerd, ready, timeout=60)

    def import_images(self, images: Path) -> None:
        """Every image but SKIPPED_IMAGES (reading a 400 MB tarball costs seconds)."""
        for tar in sorted(images.glob("*.tar")):
            if tar.stem not in SKIPPED_IMAGES:
                self._ctr("-n", "k8s.io", "images", "import", str(tar), timeout=600)

    def import_image(self, tar: Path) -> None:
        self._ctr("-n", "k8s.io", "images", "import", str(tar), timeout=600)

    def _ctr(self, *args: str, timeout: float = 10) -> str:
        done = subprocess.run(
            ["ctr", "--address", str(self.socket), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise ControlPlaneError(f"ctr {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def _containerd_config(self, cni_conf: Path) -> str:
        root, run = self.slot.var_dir / "containerd", self.slot.run_dir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{root}"
state = "{run}"
oom_score = 0
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_cdi = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.slot.var_dir / "opt"}"
"""

    def _cni_config(self) -> dict[str, object]:
        return {
            "cniVersion": "0.4.0",
            "name": "ratline",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "rlbr0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node_net.POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.slot.var_dir / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    # -- kubelet, kube-proxy, kube-scheduler ----------------------------------------------------

    def start_kubelet(self, kubeconfig: Path, pki: Pki) -> Component:
        var = self.slot.var_dir
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(pki.ca.cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "tlsCertFile": str(pki.kubelet_serving.cert),
            "tlsPrivateKeyFile": str(pki.kubelet_serving.key),
            "address": self.slot.node_ip,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "readOnlyPort": 0,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.slot.cgroup}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(var / "pod-logs"),
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 250,
            "serializeImagePulls": False,
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusReportFrequency": "10s",
            "shutdownGracePeriod": "0s",
            "registerNode": True,
            "enableServer": True,
            "localStorageCapacityIsolation": True,
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
        }
        path = self.dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = [
            *self.slot.nsenter(), str(self._bins["kubelet"]), f"--config={path}",
            f"--kubeconfig={kubeconfig}", f"--root-dir={var / 'kubelet'}",
            f"--hostname-override={self.node_name}", f"--node-ip={self.slot.node_ip}",
            "--v=1",
        ]  # fmt: skip
        component = self._spawn("kubelet", argv)
        component.grace = 10.0
        return component

    def start_proxy(self, kubeconfig: Path) -> Component:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": node_net.POD_CIDR,
            "hostnameOverride": self.node_name,
            "bindAddress": self.slot.node_ip,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # 0: leave the host's conntrack sizing and timeouts alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        return self._spawn(
            "kube-proxy", [*self.slot.nsenter(), str(self._bins["kube-proxy"]), f"--config={path}"]
        )

    def start_scheduler(self, kubeconfig: Path) -> Component:
        config = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig), "qps": 200, "burst": 400},
            "leaderElection": {"leaderElect": False},
        }
        path = self.dir / "kube-scheduler.yaml"
        path.write_text(yaml.safe_dump(config))
        return self._spawn(
            "kube-scheduler",
            [str(self._bins["kube-scheduler"]), f"--config={path}", "--secure-port=0"],
        )
