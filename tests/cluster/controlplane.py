"""A private Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager
and the process kubelet, each a child process whose log lands in `<state>/logs`.

Used by the pytest plugin (`kube_fixtures.py`), by the demo, and from a shell:

    python -m tests.cluster.controlplane up --state DIR    # detaches; prints `export KUBECONFIG=`
    python -m tests.cluster.controlplane down --state DIR

Every port is picked free on 127.0.0.1 and re-picked when another process
takes it before the component binds, so several control planes can run side
by side. Each component runs in its own process group; `stop()` sends
SIGTERM to the group, waits, then SIGKILLs it, and (by default) the
components also die with the process that started them (`cp_processes.py`).
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.cluster import node_net
from tests.cluster.binaries import require
from tests.cluster.certs import CertPair, Pki, generate_pki
from tests.cluster.cp_processes import (
    Component,
    local_open,
    pid_alive,
    spawn,
    stop_process,
    tail,
    wait_ready,
)

# Re-exported: callers catch `controlplane.ControlPlaneError`, and the e2e tests patch
# `controlplane.free_port`, which `_with_free_ports` looks up here.
from tests.cluster.cp_processes import ControlPlaneError as ControlPlaneError
from tests.cluster.cp_processes import free_port as free_port
from tests.cluster.node import RealNode, build_images

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_NAME = "ratline-node"
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
_PORT_ATTEMPTS = 5
_PORT_TAKEN = ("address already in use", "bind: address")


def default_python() -> Path:
    """The project virtualenv's interpreter (not resolved: the symlink is what selects the venv)."""
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def write_kubeconfig(path: Path, server: str, ca: Path, user: CertPair, name: str) -> Path:
    """A self-contained kubeconfig (certificates embedded) for one client identity."""

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "ratline",
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate-data": b64(user.cert),
                    "client-key-data": b64(user.key),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": "ratline", "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager (+ the process kubelet) in `state_dir`."""

    def __init__(
        self,
        state_dir: Path,
        *,
        node_name: str = NODE_NAME,
        kubelet: bool = True,
        real_node: bool = False,
        die_with_parent: bool = True,
        python: Path | None = None,
        crds: Sequence[Path] = (),
    ) -> None:
        self.state_dir = state_dir.resolve()
        # Installed before the controller manager starts: its garbage collector discovers
        # resources at start and then only every 30 s, so CRDs created later get their
        # dependents collected up to ~40 s late.
        self.crds = [file for path in crds for file in _yaml_files(path)]
        self.node_name = node_name
        self.with_kubelet = kubelet
        self.real_node = real_node  # containerd + kubelet + kube-proxy + scheduler (node.py)
        self.slot: node_net.Slot | None = None
        self.die_with_parent = die_with_parent
        self.python = python or default_python()
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.log_dir = self.state_dir / "logs"
        self.pod_dir = self.state_dir / "pods"
        self.bin_dir = self.state_dir / "bin"
        self.server = ""
        self.start_seconds = 0.0
        self.timings: dict[str, float] = {}  # phase -> seconds since start() began, when ready
        self._components: list[Component] = []
        self._pki: Pki | None = None
        self._bins = require("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start every component and wait until each is ready (about 6 s on 2 cores)."""
        began = time.monotonic()
        for stale in (self.state_dir / "etcd", self.pod_dir):  # always a fresh cluster
            shutil.rmtree(stale, ignore_errors=True)
        for directory in (self.state_dir, self.log_dir, self.pod_dir, self.bin_dir):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            extra_ips: tuple[str, ...] = ()
            if self.real_node:
                images = build_images()  # cached: seconds unless an input changed
                self.slot = node_net.acquire()
                extra_ips = (self.slot.host_ip, self.slot.node_ip)
            with ThreadPoolExecutor(1) as pool:  # etcd needs no certificates: overlap the two
                pki_future = pool.submit(
                    generate_pki, self.state_dir / "pki", self.node_name, extra_ips
                )
                etcd_url = self._start_etcd()
                self._pki = pki = pki_future.result()
            self._mark("etcd+pki", began)
            self._start_apiserver(pki, etcd_url)
            write_kubeconfig(self.kubeconfig, self.server, pki.ca.cert, pki.admin, "admin")
            self._mark("kube-apiserver", began)
            if self.crds:
                self._install_crds()
                self._mark("crds", began)
            kubelet: Component | None = None
            if self.real_node:
                kubelet = self._start_real_node(pki, images)
            else:
                kubelet = self._spawn_kubelet(pki) if self.with_kubelet else None
            self._start_controller_manager(pki)
            self._mark("kube-controller-manager", began)
            if kubelet is not None:
                self._wait_node_ready(kubelet)
                self._mark("kubelet", began)
            self._link_tools()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _mark(self, phase: str, began: float) -> None:
        self.timings[phase] = round(time.monotonic() - began, 2)

    def stop(self) -> None:
        """Stop in reverse start order: controllers, kubelet (it ends its pods), apiserver, etcd."""
        while self._components:
            component = self._components.pop()
            stop_process(component.proc, component.grace)
        if self.slot is not None:
            node_net.release(self.slot)  # its containers, cgroups, bridge and namespaces
            self.slot = None
        elif self.with_kubelet and self.pod_dir.exists():
            from tests.cluster.kubelet import kill_pod_processes

            kill_pod_processes(self.pod_dir)

    @property
    def pids(self) -> dict[str, int]:
        """Component name -> pid, for diagnostics and the CLI."""
        return {c.name: c.proc.pid for c in self._components}

    # -- components --------------------------------------------------------------------------

    def _spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> Component:
        death = None
        if self.die_with_parent:  # the kubelet gets SIGTERM so it can still stop its pods
            death = signal.SIGTERM if name == "kubelet" else signal.SIGKILL
        log = self.log_dir / f"{name}.log"
        component = spawn(name, argv, log, cwd=self.state_dir, env=env, death_signal=death)
        self._components.append(component)
        return component

    def _with_free_ports(
        self,
        name: str,
        count: int,
        launch: Callable[[list[int]], list[str]],
        ready: Callable[[list[int]], None],
        timeout: float,
    ) -> list[int]:
        """Launch with fresh ports, re-picking them while the failure is a port taken meanwhile."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            ports = [free_port() for _ in range(count)]
            component = self._spawn(name, launch(ports))
            try:
                wait_ready(component, functools.partial(ready, ports), timeout)
                return ports
            except ControlPlaneError:
                log_tail = tail(component.log, 40).lower()
                if attempt == _PORT_ATTEMPTS or not any(s in log_tail for s in _PORT_TAKEN):
                    raise
                self._components.remove(component)
                stop_process(component.proc, 1.0)
        raise ControlPlaneError(f"{name}: no free port after {_PORT_ATTEMPTS} attempts")

    def _start_etcd(self) -> str:
        data = self.state_dir / "etcd"

        def argv(ports: list[int]) -> list[str]:
            shutil.rmtree(data, ignore_errors=True)  # etcd refuses a half-initialised data dir
            client, peer = (f"http://127.0.0.1:{p}" for p in ports)
            return [
                str(self._bins["etcd"]), "--name=ratline", f"--data-dir={data}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=ratline={peer}", "--initial-cluster-state=new",
                "--unsafe-no-fsync=true", "--log-level=warn",
                "--quota-backend-bytes=4294967296", "--snapshot-count=50000",
            ]  # fmt: skip

        def ready(ports: list[int]) -> None:
            url = f"http://127.0.0.1:{ports[0]}/health"
            with local_open(url, timeout=2) as resp:
                body = json.loads(resp.read())
            if body.get("health") != "true":
                raise ControlPlaneError(f"etcd health: {body}")

        ports = self._with_free_ports("etcd", 2, argv, ready, timeout=30)
        return f"http://127.0.0.1:{ports[0]}"

    def _start_apiserver(self, pki: Pki, etcd_url: str) -> None:
        # The real node's pods and kubelet reach it on the host end of the node's veth.
        bind = "0.0.0.0" if self.slot else "127.0.0.1"
        advertise = self.slot.host_ip if self.slot else "127.0.0.1"

        def argv(ports: list[int]) -> list[str]:
            return [
                str(self._bins["kube-apiserver"]), f"--etcd-servers={etcd_url}",
                f"--bind-address={bind}", f"--advertise-address={advertise}",
                f"--secure-port={ports[0]}", f"--cert-dir={self.state_dir / 'apiserver'}",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca.cert}", "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--kubelet-client-certificate={pki.apiserver_kubelet_client.cert}",
                f"--kubelet-client-key={pki.apiserver_kubelet_client.key}",
                f"--kubelet-certificate-authority={pki.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP", "--allow-privileged=true",
                "--profiling=false", "--max-requests-inflight=800",
                "--max-mutating-requests-inflight=400",
            ]  # fmt: skip

        def ready(ports: list[int]) -> None:
            self.server = f"https://127.0.0.1:{ports[0]}"
            self._api("GET", "/readyz")

        self._with_free_ports("kube-apiserver", 1, argv, ready, timeout=90)

    def _start_controller_manager(self, pki: Pki) -> None:
        kubeconfig = write_kubeconfig(
            self.state_dir / "controller-manager.kubeconfig",
            self.server,
            pki.ca.cert,
            pki.controller_manager,
            "system:kube-controller-manager",
        )

        def argv(ports: list[int]) -> list[str]:
            return [
                str(self._bins["kube-controller-manager"]), f"--kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={ports[0]}",
                f"--cert-dir={self.state_dir / 'controller-manager'}", "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}", f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}", "--cluster-name=ratline",
                "--kube-api-qps=200", "--kube-api-burst=400", "--profiling=false",
                "--concurrent-replicaset-syncs=10", "--concurrent-gc-syncs=30",
            ]  # fmt: skip

        def ready(ports: list[int]) -> None:
            unverified = ssl.create_default_context()
            unverified.check_hostname = False
            unverified.verify_mode = ssl.CERT_NONE  # its serving cert is self-signed
            url = f"https://127.0.0.1:{ports[0]}/healthz"
            with local_open(url, timeout=2, context=unverified) as resp:
                resp.read()

        self._with_free_ports("kube-controller-manager", 1, argv, ready, timeout=60)

    def _spawn_kubelet(self, pki: Pki) -> Component:
        kubeconfigs = {
            name: write_kubeconfig(self.state_dir / f"{name}.kubeconfig", self.server,
                                   pki.ca.cert, pair, user)
            for name, pair, user in (
                ("kubelet", pki.kubelet_client, f"system:node:{self.node_name}"),
                ("scheduler", pki.scheduler, "system:kube-scheduler"),
            )
        }  # fmt: skip
        argv = [
            str(self.python), "-m", "tests.cluster.kubelet",
            f"--kubeconfig={kubeconfigs['kubelet']}",
            f"--scheduler-kubeconfig={kubeconfigs['scheduler']}",
            f"--node={self.node_name}", f"--work-dir={self.pod_dir}", f"--python={self.python}",
            f"--repo-root={REPO_ROOT}", f"--serving-cert={pki.kubelet_serving.cert}",
            f"--serving-key={pki.kubelet_serving.key}",
        ]  # fmt: skip
        tool_dirs = [str(self._bins["kubectl"].parent), str(self._bins["helm"].parent)]
        env = {  # pods see kubectl and helm on PATH, as if their image shipped them
            "PATH": os.pathsep.join([*tool_dirs, os.environ.get("PATH", "/usr/bin:/bin")]),
            "PYTHONPATH": str(REPO_ROOT),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        component = self._spawn("kubelet", argv, env)
        component.grace = 20.0  # it stops its pods first (at most 5 s each, in parallel)
        return component

    def _start_real_node(self, pki: Pki, images: Path) -> Component:
        """containerd (images imported), kubelet, kube-proxy and kube-scheduler."""
        assert self.slot is not None
        node = RealNode(self.state_dir, self.node_name, self.slot, self._spawn)
        node.start_containerd()
        node.import_images(images)
        server = self.server.replace("127.0.0.1", self.slot.host_ip)
        configs = {
            name: write_kubeconfig(self.state_dir / f"{name}.kubeconfig", url, pki.ca.cert,
                                   pair, user)
            for name, url, pair, user in (
                ("kubelet", server, pki.kubelet_client, f"system:node:{self.node_name}"),
                ("kube-proxy", server, pki.kube_proxy, "system:kube-proxy"),
                ("scheduler", self.server, pki.scheduler, "system:kube-scheduler"),
            )
        }  # fmt: skip
        kubelet = node.start_kubelet(configs["kubelet"], pki)
        node.start_proxy(configs["kube-proxy"])
        node.start_scheduler(configs["scheduler"])
        return kubelet

    def _wait_node_ready(self, kubelet: Component) -> None:
        def node_ready() -> None:
            node = self._api("GET", f"/api/v1/nodes/{self.node_name}")
            conditions = node.get("status", {}).get("conditions", [])
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                raise ControlPlaneError(f"node {self.node_name} not Ready yet")

        wait_ready(kubelet, node_ready, timeout=60)

    def _link_tools(self) -> None:
        for name in ("kubectl", "helm"):
            link = self.bin_dir / name
            if not link.is_symlink():
                link.symlink_to(self._bins[name])

    # -- admin API access without a client library -------------------------------------------

    def _install_crds(self) -> None:
        """Create the CRDs (existing ones are kept) and wait until each is Established."""
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        names = []
        for file in self.crds:
            for doc in yaml.safe_load_all(file.read_text()):
                if not doc:
                    continue
                if doc.get("kind") != "CustomResourceDefinition":
                    raise ControlPlaneError(
                        f"{file}: not a CustomResourceDefinition: {doc.get('kind')}"
                    )
                self._api("POST", base, doc, allow=(409,))
                names.append(doc["metadata"]["name"])
        apiserver = next(c for c in self._components if c.name == "kube-apiserver")
        for name in names:

            def established(name: str = name) -> None:
                conditions = (
                    self._api("GET", f"{base}/{name}").get("status", {}).get("conditions", [])
                )
                if not any(
                    c["type"] == "Established" and c["status"] == "True" for c in conditions
                ):
                    raise ControlPlaneError(f"CRD {name} not Established yet")

            wait_ready(apiserver, established, timeout=30)

    def _api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        allow: Sequence[int] = (),
    ) -> dict[str, Any]:
        """One admin request; returns the JSON body (empty for non-JSON answers and for the
        error statuses in `allow`)."""
        assert self._pki is not None
        context = ssl.create_default_context(cafile=str(self._pki.ca.cert))
        context.load_cert_chain(str(self._pki.admin.cert), str(self._pki.admin.key))
        request = urllib.request.Request(
            self.server + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with local_open(request, timeout=5, context=context) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            if err.code in allow:
                return {}
            raise ControlPlaneError(
                f"{method} {path}: HTTP {err.code}: {err.read()[:300]!r}"
            ) from None
        try:
            parsed: dict[str, Any] = json.loads(raw)
        except ValueError:
            return {}
        return parsed


# -- the detached CLI ---------------------------------------------------------------------------


def _yaml_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.yaml")) if path.is_dir() else [path]


def _serve(state: Path, node: str, crds: Sequence[Path], real: bool) -> int:
    """Foreground: run the control plane until SIGTERM/SIGINT (what `up` detaches)."""
    pid_file, ready_file = state / "controlplane.pid", state / "ready"
    pid_file.write_text(str(os.getpid()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a handler, not a mask: children inherit masks
        signal.signal(sig, lambda *_: stop.set())
    plane = ControlPlane(state, node_name=node, crds=crds, real_node=real)
    try:
        plane.start()
        info = {
            "server": plane.server,
            "pids": plane.pids,
            "timings": plane.timings,
            "host_ip": plane.slot.host_ip if plane.slot else None,  # pods reach the host here
        }
        ready_file.write_text(json.dumps(info))
        print(f"control plane ready in {plane.start_seconds:.1f}s: {info}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        plane.stop()
        ready_file.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
    return 0


def _up(state: Path, node: str, crds: Sequence[Path], timeout: float, real: bool) -> int:
    state.mkdir(parents=True, exist_ok=True)
    pid_file, ready_file = state / "controlplane.pid", state / "ready"
    if pid_alive(pid_file) is None:
        ready_file.unlink(missing_ok=True)
        (state / "logs").mkdir(exist_ok=True)
        log = state / "logs" / "controlplane.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.cluster.controlplane", "serve", "--state", str(state),
                 "--node", node, *(f"--crd={crd}" for crd in crds),
                 *(["--real-node"] if real else [])],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=REPO_ROOT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                print(
                    f"control plane failed to start; tail of {log}:\n{tail(log)}", file=sys.stderr
                )
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)
                return 1
            time.sleep(0.2)
    print(f"export KUBECONFIG={state / 'kubeconfig'}")
    return 0


def _down(state: Path, timeout: float) -> int:
    pid_file = state / "controlplane.pid"
    pid = pid_alive(pid_file)
    if pid is None:
        print(f"no control plane running in {state}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"control plane in {state} stopped")
            return 0
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)  # its components die with it (PDEATHSIG)
    pid_file.unlink(missing_ok=True)
    print(f"control plane in {state} killed after {timeout:.0f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`up`, `down` or `serve` a control plane whose state lives in --state."""
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.controlplane")
    parser.add_argument("command", choices=["up", "down", "serve"])
    parser.add_argument("--state", type=Path, required=True, help="state directory")
    parser.add_argument("--node", default=NODE_NAME, help="the process kubelet's node name")
    parser.add_argument(
        "--crd", type=Path, action="append", default=[],
        help="CRD file or directory of *.yaml to install before the controllers start (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--real-node", action="store_true",
        help="a containerd node (node.py) instead of the process kubelet",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900.0)  # a first image build
    args = parser.parse_args(argv)
    state: Path = args.state.resolve()
    crds = [crd.resolve() for crd in args.crd]
    if args.command == "serve":
        return _serve(state, args.node, crds, args.real_node)
    if args.command == "up":
        return _up(state, args.node, crds, args.timeout, args.real_node)
    return _down(state, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
