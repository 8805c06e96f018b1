"""Operator latency and throughput on the local control plane (a benchmark, not a test).

`python -m bench.operator_latency` starts a private control plane, a private
Postgres and the operator (a subprocess, default settings except the
namespace), then measures with the API's own watch streams, all on this
process's clock. It does so on the real node (`--node real`: containerd, each
worker a container from the `ratline-e2e:local` image), on the process kubelet
(`--node process`: each worker a local Python process), or both side by side
(the default):

- apply -> worker pod created (p50/p99 over `--latency-runs` hello runs);
- worker pod exit reported -> run status final (negative: the status was
  already final, projected from the store, before the kubelet reported the exit);
- signal patch -> next worker pod, and -> run Succeeded (gate runs);
- `--batch` three-step runs applied at once: wall time to all Succeeded, with
  the operator's CPU seconds and peak RSS over that window.

Writes bench/results/operator.md (and .json next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from tests.cluster.controlplane import ControlPlane
from tests.cluster.pg import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GROUP, VERSION = "ratline.dev", "v1alpha1"
HELLO = "examples.hello.workflow:hello"
GATE = "tests.e2e.workflows.flows:gate"
FINAL = {"Succeeded", "Failed", "Cancelled", "TimedOut"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 50) * 1000, 1),
        "p99_ms": round(pct(values, 99) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else float("nan"),
    }


class Observer:
    """Watches pods and WorkflowRuns of one namespace and timestamps what matters."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.lock = threading.Lock()
        self.pod_added: dict[str, float] = {}  # pod name -> first seen
        self.pod_exited: dict[str, float] = {}  # pod name -> exit first reported
        self.pod_running: dict[str, float] = {}  # pod name -> worker container first running
        self.phase_at: dict[tuple[str, str], float] = {}  # (run, phase) -> first seen
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._pods, daemon=True),
            threading.Thread(target=self._runs, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _stream(self, fn: Callable[..., Any], **kwargs: Any) -> Iterator[dict[str, Any]]:
        while not self.stop.is_set():
            w: Any = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in w.stream(fn, timeout_seconds=30, **kwargs):
                    yield event
                    if self.stop.is_set():
                        return
            except Exception:  # the watch expired or dropped: start a new one
                time.sleep(0.1)

    def _pods(self) -> None:
        for event in self._stream(
            self.core.list_namespaced_pod, namespace=self.namespace,
            label_selector="app.kubernetes.io/managed-by=ratline",
        ):  # fmt: skip
            now = time.monotonic()
            pod = event["object"]
            name = pod.metadata.name
            with self.lock:
                self.pod_added.setdefault(name, now)
                for status in pod.status.container_statuses or []:
                    if status.state and (status.state.running or status.state.terminated):
                        self.pod_running.setdefault(name, now)
                    if status.state and status.state.terminated:
                        self.pod_exited.setdefault(name, now)

    def _runs(self) -> None:
        for event in self._stream(
            self.custom.list_namespaced_custom_object, group=GROUP, version=VERSION,
            namespace=self.namespace, plural="workflowruns",
        ):  # fmt: skip
            now = time.monotonic()
            run = event["object"]
            phase = (run.get("status") or {}).get("phase")
            if phase:
                with self.lock:
                    self.phase_at.setdefault((run["metadata"]["name"], phase), now)

    def wait(self, what: str, probe: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if probe():
                    return
            time.sleep(0.02)
        raise TimeoutError(f"timed out waiting for {what}")

    def close(self) -> None:
        self.stop.set()


def run_body(name: str, workflow: str, inp: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkflowRun",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": workflow}, "input": inp},
    }


class OperatorProc:
    """The operator under test, with CPU and RSS read from /proc."""

    def __init__(self, kubeconfig: Path, namespace: str, dsn: str, log: Path) -> None:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig))
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "ratline.controller", "--dsn", dsn,
                "--namespace", namespace, "--metrics-port", str(free_port()),
                "--metrics-host", "127.0.0.1", "--standalone",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def rss_mib(self, key: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@contextmanager
def environment(work: Path, real: bool) -> Iterator[tuple[ControlPlane, str, str]]:
    """A control plane (with the CRDs) and a Postgres database: (plane, DSN, DSN for pods)."""
    with ControlPlane(work / "kube", crds=[ROOT / "crds"], real_node=real) as plane:
        host_ip = plane.slot.host_ip if plane.slot else "127.0.0.1"
        pg = PostgresServer(
            work / "pg",
            settings={"listen_addresses": f"127.0.0.1,{host_ip}" if real else "127.0.0.1"},
            client_networks=["172.30.0.0/16"] if real else [],
        )
        pg.start()
        try:
            dsn = pg.create_database(f"bench_{uuid.uuid4().hex[:8]}")
            yield plane, dsn, dsn.replace("127.0.0.1", host_ip)
        finally:
            pg.stop()


def measure(args: argparse.Namespace, work: Path, real: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    started = time.monotonic()
    with environment(work, real) as (plane, dsn, pod_dsn):
        results["cluster_start_seconds"] = round(time.monotonic() - started, 1)
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
        core: Any = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        core.create_namespaced_secret(
            ns, {"metadata": {"name": "ratline-db"}, "stringData": {"dsn": pod_dsn}}
        )
        log_path = work / "effects.jsonl"  # containers cannot reach it: no effects log there
        env = [] if real else [{"name": "RATLINE_E2E_LOG", "value": str(log_path)}]
        image = "ratline-e2e:local" if real else "bench"
        for name, entry, conc in (("hello", HELLO, args.parallel), ("gate", GATE, 0)):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Workflow",
                "metadata": {"name": name},
                "spec": {"image": image, "entrypoint": entry, "concurrency": conc,
                         "podTemplate": {"env": env}},
            }  # fmt: skip
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workflows", body)
        operator = OperatorProc(plane.kubeconfig, ns, dsn, work / "operator.log")
        observer = Observer(api, ns)
        try:
            time.sleep(3)  # the operator logs in and starts watching
            results["latency"] = latency(custom, observer, ns, args.latency_runs)
            results["signal"] = signal_latency(custom, observer, ns, args.signal_runs)
            results["batch"] = batch(custom, observer, operator, ns, args.batch, args.parallel)
        finally:
            observer.close()
            operator.stop()
            api.close()
    return results


def _seen(observer: Observer, run: str, phase: str, exited_pod: str | None) -> bool:
    """The run reached `phase` (and `exited_pod`, if given, reported its exit)."""
    if (run, phase) not in observer.phase_at:
        return False
    return exited_pod is None or exited_pod in observer.pod_exited


def latency(custom: Any, observer: Observer, ns: str, count: int) -> dict[str, Any]:
    """One hello run at a time: apply -> pod, pod exit -> final status."""
    to_pod, to_running, exit_to_status, apply_to_done = [], [], [], []
    for i in range(count):
        name = f"lat-{i}"
        started = time.monotonic()
        custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "workflowruns", run_body(name, "hello", {"name": f"n{i}"})
        )
        pod = f"{name}-w1"
        observer.wait(f"{name} done", partial(_seen, observer, name, "Succeeded", pod), 120)
        with observer.lock:
            to_pod.append(observer.pod_added[pod] - started)
            to_running.append(observer.pod_running[pod] - started)
            exit_to_status.append(observer.phase_at[(name, "Succeeded")] - observer.pod_exited[pod])
            apply_to_done.append(observer.phase_at[(name, "Succeeded")] - started)
    return {
        "apply_to_pod": summary(to_pod),
        "apply_to_running": summary(to_running),
        "pod_exit_to_final_status": summary(exit_to_status),
        "apply_to_succeeded": summary(apply_to_done),
    }


def signal_latency(custom: Any, observer: Observer, ns: str, count: int) -> dict[str, Any]:
    """Gate runs: wait until suspended (no pod), patch the signal, time the resume."""
    to_pod, to_done = [], []
    for i in range(count):
        name = f"sig-{i}"
        custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "workflowruns", run_body(name, "gate", {"key": name})
        )
        observer.wait(
            f"{name} suspended", partial(_seen, observer, name, "Suspended", f"{name}-w1"), 120
        )
        started = time.monotonic()
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "workflowruns", name, {"spec": {"signals": {"go": {"ok": i}}}}
        )
        observer.wait(f"{name} done", partial(_seen, observer, name, "Succeeded", None), 120)
        with observer.lock:
            to_pod.append(observer.pod_added[f"{name}-w2"] - started)
            to_done.append(observer.phase_at[(name, "Succeeded")] - started)
    return {"signal_to_new_pod": summary(to_pod), "signal_to_succeeded": summary(to_done)}


def batch(
    custom: Any, observer: Observer, operator: OperatorProc, ns: str, count: int, parallel: int
) -> dict[str, Any]:
    """`count` three-step runs applied at once; the Workflow allows `parallel` pods."""
    peak = operator.rss_mib()
    cpu_before = operator.cpu_seconds()
    started = time.monotonic()
    names = [f"batch-{i}" for i in range(count)]
    for name in names:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "workflowruns", run_body(name, "hello", {"name": name})
        )
    applied = time.monotonic() - started
    deadline = started + 60 + count * 5
    while time.monotonic() < deadline:
        with observer.lock:
            done = sum((n, "Succeeded") in observer.phase_at for n in names)
        peak = max(peak, operator.rss_mib())
        if done == count:
            break
        time.sleep(0.25)
    wall = time.monotonic() - started
    return {
        "runs": count,
        "parallel_pods": parallel,
        "succeeded": done,
        "apply_seconds": round(applied, 2),
        "wall_seconds": round(wall, 2),
        "runs_per_second": round(done / wall, 2),
        "operator_cpu_seconds": round(operator.cpu_seconds() - cpu_before, 2),
        "operator_rss_peak_mib": round(max(peak, operator.rss_mib("VmHWM")), 1),
    }


NODES = {"real": "real node (containerd)", "process": "process kubelet"}


def render(all_results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    nodes = [n for n in ("real", "process") if n in all_results]

    def cells(n: str, section: str, key: str) -> str:
        s = all_results[n][section][key]
        return f"{s['n']} | {s['p50_ms']} | {s['p99_ms']}"

    def row(label: str, section: str, key: str) -> str:
        return f"| {label} | " + " | ".join(cells(n, section, key) for n in nodes) + " |"

    head = " | ".join(f"{NODES[n]}: n | p50 ms | p99 ms" for n in nodes)
    lines = [
        "# Operator latency and throughput",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}. Local control plane; the real node runs each worker "
        "pod as a containerd container (image `ratline-e2e:local`), the process kubelet as a "
        "local Python process. Private Postgres, operator with default settings "
        "(`--status-interval 1`). Produced by `python -m bench.operator_latency`.",
        "",
        f"| measure | {head} |",
        "|---|" + "---|---|---|" * len(nodes),
        row("apply -> worker pod created", "latency", "apply_to_pod"),
        row("apply -> worker pod Running", "latency", "apply_to_running"),
        row("worker pod exit reported -> status final", "latency", "pod_exit_to_final_status"),
        row("apply -> status Succeeded (3 steps)", "latency", "apply_to_succeeded"),
        row("signal patch -> new worker pod", "signal", "signal_to_new_pod"),
        row("signal patch -> status Succeeded", "signal", "signal_to_succeeded"),
        "",
    ]
    for n in nodes:
        bat = all_results[n]["batch"]
        lines += [
            f"Batch on the {NODES[n]}: {bat['runs']} three-step runs applied at once (Workflow "
            f"concurrency {bat['parallel_pods']} worker pods): {bat['succeeded']} Succeeded in "
            f"{bat['wall_seconds']} s ({bat['runs_per_second']} runs/s; applying took "
            f"{bat['apply_seconds']} s). Operator: {bat['operator_cpu_seconds']} CPU s, "
            f"peak RSS {bat['operator_rss_peak_mib']} MiB. Cluster start (with the image "
            f"import on the real node): {all_results[n]['cluster_start_seconds']} s.",
            "",
        ]
    return "\n".join(
        [
            *lines,
            "Notes: the exit -> status figure is negative when the status was already final "
            "before the kubelet reported the pod's exit (the operator projects the store, "
            "it does not wait for the pod). A run's status is patched at most once per "
            "second: a change that comes sooner after the previous patch waits for the rest "
            "of that second.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.operator_latency")
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--signal-runs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=20, help="worker pods at once (batch)")
    parser.add_argument("--out", type=Path, default=RESULTS / "operator.md")
    parser.add_argument("--node", choices=["real", "process", "both"], default="both")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for node in ("real", "process") if args.node == "both" else (args.node,):
        work = Path(tempfile.mkdtemp(prefix="ratline-opbench-"))
        os.chmod(work, 0o755)  # the postgres OS user must reach its data dir
        try:
            results[node] = measure(args, work, real=node == "real")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, args))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
