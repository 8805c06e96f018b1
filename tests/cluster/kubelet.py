"""The process kubelet: runs the pods bound to its node as local processes (tests and demo only).

Started by `controlplane.py` as `python -m tests.cluster.kubelet --kubeconfig ... --node ...`
with the `system:node:<node>` identity (Node authorizer + NodeRestriction apply). It is also
the cluster's scheduler: under the `system:kube-scheduler` identity (NodeRestriction forbids a
node to bind pods) it binds every pod left to the default scheduler to itself, honouring
scheduling gates and nodeSelector, not resource fit, affinity or taints (the Node reports the
machine's real cpu and memory, and room for 1000 pods).

This module is the node: like a kubelet it registers a Ready Node, renews its Lease, watches
the pods bound to it and hands each to a `PodWorker` (`kubelet_pod.py`: containers, env,
probes, status), and serves `kubectl logs` from `<work_dir>/<ns>_<pod>/<container>.log`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tests.cluster.kubelet_pod import (
    HOST_IP,
    MARKER_ENV,
    TERMINAL,
    ApiError,
    Obj,
    PodWorker,
    now_iso,
)

log = logging.getLogger("kubelet")

REPO_ROOT = Path(__file__).resolve().parents[2]


# -- pure helpers (unit-tested) -----------------------------------------------------------------


def schedulable(pod: Obj, node_labels: Mapping[str, str]) -> bool | None:
    """True: bind it here; False: it does not fit (nodeSelector); None: not ours to schedule."""
    spec, meta = pod["spec"], pod["metadata"]
    if spec.get("nodeName") or meta.get("deletionTimestamp") or spec.get("schedulingGates"):
        return None
    if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
        return None
    if pod.get("status", {}).get("phase") in TERMINAL:
        return None
    selector = spec.get("nodeSelector") or {}
    return all(node_labels.get(key) == value for key, value in selector.items())


def kill_pod_processes(work_dir: Path) -> int:
    """SIGKILL the process group of every process a kubelet for `work_dir` started (leak sweep)."""
    marker = f"{MARKER_ENV}={work_dir.resolve()}".encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.killpg(os.getpgid(int(entry.name)), signal.SIGKILL)
                killed += 1
        except OSError:
            continue
    return killed


# -- the apiserver, as raw JSON ------------------------------------------------------------------


class Api:
    """JSON requests over the kubernetes client's connection pool (no model (de)serialisation:
    the kubelet handles hundreds of pods and works on plain dicts)."""

    def __init__(self, kubeconfig: Path) -> None:
        conf = k8s_client.Configuration()
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=conf
        )
        conf.connection_pool_maxsize = 128
        conf.no_proxy = ",".join(filter(None, [conf.no_proxy, "127.0.0.1", "localhost"]))
        self.server: str = conf.host
        self.ca_file = Path(conf.ssl_ca_cert or "")  # cluster CA (load_kube_config wrote it)
        self._auth = conf.auth_settings().get("BearerToken")
        self._client = k8s_client.ApiClient(conf)

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        query: Mapping[str, str] | None,
        content_type: str,
        timeout: Any,
    ) -> Any:
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if self._auth and self._auth["value"]:
            headers[self._auth["key"]] = self._auth["value"]
        return self._client.call_api(method, url, headers, body, None, _request_timeout=timeout)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        patch: str = "strategic-merge",
        query: Mapping[str, str] | None = None,
    ) -> Obj:
        content_type = (
            f"application/{patch}-patch+json" if method == "PATCH" else "application/json"
        )
        resp = self._send(method, path, body, query, content_type, (10, 30))
        data: bytes = resp.read()
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, data)
        return json.loads(data) if data else {}

    def watch(self, path: str, query: Mapping[str, str]) -> Iterator[Obj]:
        """Events of one watch request, until the server ends it."""
        resp = self._send(
            "GET",
            path,
            None,
            {**query, "watch": "true"},
            "application/json",
            (10, int(query.get("timeoutSeconds", "300")) + 30),
        )
        if resp.status != 200:
            raise ApiError(resp.status, resp.read())
        raw = resp.response
        try:
            pending = b""
            for chunk in raw.stream(65536, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()


# -- the node ----------------------------------------------------------------------------------


class ProcessKubelet:
    """Registers the node, keeps its lease, binds pending pods and runs a PodWorker per pod.

    `run()` blocks until `stopping` is set, so it works in a thread as well as in the
    `python -m tests.cluster.kubelet` process the control plane starts. `kubeconfig` may be an
    `Api` already (tests script one)."""

    def __init__(
        self,
        kubeconfig: Path | Api,
        node_name: str,
        work_dir: Path,
        python: Path = Path(sys.executable),
        repo_root: Path = REPO_ROOT,
        *,
        scheduler_kubeconfig: Path | None = None,
    ) -> None:
        self.api = kubeconfig if isinstance(kubeconfig, Api) else Api(kubeconfig)
        # NodeRestriction forbids a node to bind pods: the scheduler's identity does it.
        self.scheduler_api = Api(scheduler_kubeconfig) if scheduler_kubeconfig else self.api
        self.node, self.python, self.repo_root = node_name, python, repo_root
        self.work_dir, self.ca_file = work_dir.resolve(), self.api.ca_file
        self.labels = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "ratline.dev/process-kubelet": "true",
        }
        self.base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
        }
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()  # uids whose worker ended in a terminal phase
        self.binding: set[str] = set()
        self.unschedulable: set[str] = set()
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="bind")
        self.stopping = threading.Event()
        self.port, self.started = 0, now_iso()

    def run(self, serving: tuple[Path, Path] | None = None) -> None:
        """Until `stopping` is set; then every pod's processes are stopped."""
        port = self._serve_logs(*serving) if serving else 0
        self._register(port)
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        for name, api, selector, handle, resync in (
            (
                "watch-own",
                self.api,
                f"spec.nodeName={self.node}",
                self.handle_own,
                self._resync_own,
            ),
            (
                "watch-pending",
                self.scheduler_api,
                "spec.nodeName=",
                self.handle_pending,
                self._resync_pending,
            ),
        ):
            args = (api, selector, handle, resync)
            threading.Thread(target=self.watch_pods, args=args, name=name, daemon=True).start()
        while not self.stopping.wait(1.0):
            pass
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(15)
        kill_pod_processes(self.work_dir)

    # -- node and lease --

    def _node_status(self) -> Obj:
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "1000"}
        beat = now_iso()
        conditions = [
            {
                "type": t,
                "status": s,
                "reason": r,
                "message": m,
                "lastHeartbeatTime": beat,
                "lastTransitionTime": self.started,
            }
            for t, s, r, m in (
                ("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
                ("MemoryPressure", "False", "KubeletHasSufficientMemory", "not checked"),
                ("DiskPressure", "False", "KubeletHasNoDiskPressure", "not checked"),
                ("PIDPressure", "False", "KubeletHasSufficientPID", "not checked"),
            )
        ]
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "process kubelet",
                "containerRuntimeVersion": "process://1",
                "kubeletVersion": "v1.35.4-ratline",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def _register(self, port: int) -> None:
        self.port = port
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": self.labels},
            "status": self._node_status(),
        }
        try:
            created = self.api.call("POST", "/api/v1/nodes", node)
        except ApiError as err:
            if err.status != 409:
                raise
            created = self.api.call(
                "PATCH", f"/api/v1/nodes/{self.node}/status", {"status": node["status"]}
            )
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.node,
                "namespace": "kube-node-lease",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.node,
                        "uid": created["metadata"]["uid"],
                    }
                ],
            },
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": 40,
                "renewTime": _micro(),
            },
        }
        with contextlib.suppress(ApiError):  # 409: a lease from an earlier run; renewed below
            self.api.call(
                "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease
            )
        log.info("node %s registered (logs on port %d)", self.node, port)

    def _heartbeat(self) -> None:
        lease = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        beats = 0
        while not self.stopping.wait(10.0):
            beats += 1
            try:
                self.api.call(
                    "PATCH",
                    lease,
                    {"spec": {"renewTime": _micro(), "holderIdentity": self.node}},
                    patch="merge",
                )
                if beats % 6 == 0:
                    self.api.call(
                        "PATCH",
                        f"/api/v1/nodes/{self.node}/status",
                        {"status": self._node_status()},
                    )
            except Exception as err:
                log.warning("heartbeat failed: %s", err)

    # -- pods --

    def watch_pods(self, api: Api, field_selector: str, handle: Callable[[Obj, bool], None],
               resync: Callable[[list[Obj]], None]) -> None:  # fmt: skip
        """List then watch pods; re-list when the watch expires (410) or breaks."""
        rv: str | None = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    listing = api.call(
                        "GET", "/api/v1/pods", query={"fieldSelector": field_selector}
                    )
                    resync(listing["items"])
                    rv = listing["metadata"]["resourceVersion"]
                query = {"fieldSelector": field_selector, "resourceVersion": rv,
                         "allowWatchBookmarks": "true", "timeoutSeconds": "300"}  # fmt: skip
                for event in api.watch("/api/v1/pods", query):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        log.info("watch ended: %s; re-listing", obj.get("message"))
                        rv = None
                        break
                    rv = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        handle(obj, event["type"] == "DELETED")
            except Exception as err:
                log.warning("pod watch (%s) failed (%s); re-listing", field_selector, err)
                rv = None
                self.stopping.wait(1.0)

    def _resync_own(self, pods: list[Obj]) -> None:
        seen = {p["metadata"]["uid"] for p in pods}
        with self.lock:
            gone = [w for uid, w in self.workers.items() if uid not in seen]
        for worker in gone:
            worker.stop(removed=True)
        for pod in pods:
            self.handle_own(pod, False)

    def _resync_pending(self, pods: list[Obj]) -> None:
        for pod in pods:
            self.handle_pending(pod, False)

    def handle_pending(self, pod: Obj, deleted: bool) -> None:
        """An unscheduled pod: bind it (in the pool; the watch never waits on the API)."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            if deleted:  # deleted, or bound: it left the `spec.nodeName=` selection
                self.unschedulable.discard(uid)
                return
            fits = schedulable(pod, self.labels)
            if fits is None or uid in self.binding or (not fits and uid in self.unschedulable):
                return
            self.binding.add(uid)
        self.pool.submit(self._bind if fits else self._unschedulable, pod)

    def handle_own(self, pod: Obj, deleted: bool) -> None:
        """A pod bound to this node: hand it to its worker; never blocks on process starts."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if deleted:
                self.finished.discard(uid)
                if worker:
                    worker.stop(removed=True)
                return
            if worker:
                worker.update(pod)
                return
            if uid in self.finished or pod.get("status", {}).get("phase") in TERMINAL:
                if pod["metadata"].get("deletionTimestamp"):
                    self.pool.submit(self._delete_now, pod)
                return
            worker = self.workers[uid] = PodWorker(self, pod)
        worker.start()

    def worker_done(self, worker: PodWorker) -> None:
        with self.lock:
            self.workers.pop(worker.uid, None)
            if not worker.removed:  # late events for it must not start it again
                self.finished.add(worker.uid)

    def is_running(self, ns: str, pod: str, container: str) -> bool:
        with self.lock:
            workers = list(self.workers.values())
        return any(w.ns == ns and w.pod_name == pod and w.is_running(container) for w in workers)

    def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        try:
            for attempt in range(5):
                try:
                    self.scheduler_api.call(
                        "POST",
                        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                        body,
                    )
                    return
                except ApiError as err:
                    if err.status in (404, 409) or attempt == 4:  # gone, or bound by someone else
                        log.info("bind %s/%s: %s", meta["namespace"], meta["name"], err)
                        return
                    time.sleep(0.2 * 2**attempt)
        finally:
            with self.lock:
                self.binding.discard(meta["uid"])

    def _unschedulable(self, pod: Obj) -> None:
        meta = pod["metadata"]
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "lastTransitionTime": now_iso(),
            "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node selector.",
        }
        with contextlib.suppress(ApiError):
            self.scheduler_api.call(
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                {"metadata": {"uid": meta["uid"]}, "status": {"conditions": [condition]}},
            )
        with self.lock:
            self.unschedulable.add(meta["uid"])
            self.binding.discard(meta["uid"])

    def _delete_now(self, pod: Obj) -> None:
        meta = pod["metadata"]
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        with contextlib.suppress(ApiError):
            self.api.call(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", options
            )

    # -- kubectl logs --

    def _serve_logs(self, cert: Path, key: Path) -> int:
        """HTTPS /containerLogs/<ns>/<pod>/<container> for the apiserver (client cert: our CA)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_file))
        context.load_cert_chain(str(cert), str(key))
        context.verify_mode = ssl.CERT_REQUIRED
        kubelet = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")  # no part can hold a "/": no traversal
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404, "only /containerLogs/<namespace>/<pod>/<container>")
                    return
                ns, pod, container = parts[1:]
                path = kubelet.work_dir / f"{ns}_{pod}" / f"{container}.log"
                if not path.is_file():
                    self.send_error(404, f"no log for {ns}/{pod}/{container}")
                    return
                query = urllib.parse.parse_qs(url.query)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                with contextlib.suppress(OSError), path.open("rb") as file:  # client gone
                    data = file.read()
                    if "tailLines" in query:
                        keep = int(query["tailLines"][0])
                        data = b"".join(data.splitlines(keepends=True)[-keep:]) if keep else b""
                    self.wfile.write(data)
                    while query.get("follow") == ["true"] and kubelet.is_running(
                        ns, pod, container
                    ):
                        self.wfile.write(file.read())
                        self.wfile.flush()
                        time.sleep(0.2)
                    self.wfile.write(file.read())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((HOST_IP, 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, name="logs", daemon=True).start()
        port: int = server.server_address[1]
        return port


def _micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.cluster.kubelet`: run until SIGTERM/SIGINT, then stop every pod."""
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.kubelet")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--scheduler-kubeconfig", type=Path, help="identity that binds pods")
    parser.add_argument("--node", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--python", type=Path, default=Path(sys.executable))
    parser.add_argument("--repo-root", type=Path, default=REPO_ROOT)
    parser.add_argument("--serving-cert", type=Path)
    parser.add_argument("--serving-key", type=Path)
    args = parser.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # pods inherit it: signals must get through
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s: %(message)s"
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    kubelet = ProcessKubelet(
        args.kubeconfig, args.node, args.work_dir, args.python, args.repo_root,
        scheduler_kubeconfig=args.scheduler_kubeconfig,
    )  # fmt: skip
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: kubelet.stopping.set())
    serving = (
        (args.serving_cert, args.serving_key) if args.serving_cert and args.serving_key else None
    )
    kubelet.run(serving)
    return 0


if __name__ == "__main__":
    sys.exit(main())
