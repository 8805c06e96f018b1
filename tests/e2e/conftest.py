"""E2e wiring on the real control plane: CRDs, a kubectl helper, the operator process.

Builds on the `cluster` / `namespace` fixtures (tests/cluster/kube_fixtures.py)
and `migrated_dsn` (tests/cluster/pg_fixtures.py). `operator` runs
`python -m ratline.controller` as a subprocess watching only the test's
namespace, with the Secret `ratline-db` its worker pods read their DSN from.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.binaries import require

# The real node's session cluster and its Postgres (test_real_node*.py).
from tests.cluster.real_node_fixtures import (  # noqa: F401
    real_cluster,
    real_db,
    real_namespace,
    real_postgres,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS = REPO_ROOT / "crds"
E2E_LOG_ENV = "RATLINE_E2E_LOG"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2
) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class Kubectl:
    """kubectl against the test cluster, defaulting to the test's namespace."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.binary = str(require("kubectl")["kubectl"])
        self.kubeconfig = Path(kubeconfig)
        self.namespace = namespace

    def run(
        self, *args: str, check: bool = True, stdin: str | None = None, namespaced: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, "--kubeconfig", str(self.kubeconfig)]
        if namespaced:
            argv += ["-n", self.namespace]
        result = subprocess.run(
            [*argv, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(
        self, *objects: dict[str, Any], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = yaml.safe_dump_all(list(objects))
        return self.run("apply", "-f", "-", stdin=text, check=check)

    def create(self, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("create", "-f", "-", stdin=yaml.safe_dump(obj), check=check)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.run("get", kind, name, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name}: {result.stderr.strip()}")
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def items(self, kind: str, *selector: str) -> list[dict[str, Any]]:
        result = self.run("get", kind, *selector, "-o", "json")
        items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
        return items

    def status(self, name: str) -> dict[str, Any]:
        run = self.get("workflowrun", name)
        return dict((run or {}).get("status") or {})

    def patch_run(self, name: str, patch: dict[str, Any], check: bool = True) -> str:
        result = self.run(
            "patch", "workflowrun", name, "--type", "merge", "-p", json.dumps(patch), check=check
        )
        return result.stdout + result.stderr

    def wait_phase(self, name: str, *phases: str, timeout: float = 60.0) -> dict[str, Any]:
        """The run's status once its phase is one of `phases`."""

        def probe() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") in phases else None

        try:
            result: dict[str, Any] = wait_for(f"{name} to be {'/'.join(phases)}", probe, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstatus now: {json.dumps(self.status(name))}") from None
        return result

    def worker_pods(self, run: str) -> list[dict[str, Any]]:
        return [
            pod
            for pod in self.items("pods", "-l", "app.kubernetes.io/managed-by=ratline")
            if pod["metadata"]["labels"].get("ratline.dev/run") == run
        ]

    def live_worker_pods(self, run: str) -> list[dict[str, Any]]:
        return [
            pod
            for pod in self.worker_pods(run)
            if pod.get("status", {}).get("phase") in (None, "Pending", "Running")
            and not pod["metadata"].get("deletionTimestamp")
        ]


def workflow_manifest(
    name: str, entrypoint: str, *, env: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"image": "ratline-e2e:local", "entrypoint": entrypoint, **spec}
    if env:
        body["podTemplate"] = {"env": [{"name": k, "value": v} for k, v in env.items()]}
    return {
        "apiVersion": "ratline.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": body,
    }


def run_manifest(
    name: str, workflow: str, inp: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"workflowRef": {"name": workflow}, **spec}
    if inp is not None:
        body["input"] = inp
    return {
        "apiVersion": "ratline.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": name},
        "spec": body,
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kubectl(cluster: Any, namespace: Any) -> Kubectl:
    ns = namespace if isinstance(namespace, str) else getattr(namespace, "name", str(namespace))
    return Kubectl(Path(cluster.kubeconfig), ns)


@pytest.fixture
def crds(kubectl: Kubectl) -> Kubectl:
    """The two CRDs applied (idempotent) and Established."""
    kubectl.run("apply", "-f", str(CRDS), namespaced=False)

    def established(crd: str) -> bool:
        return kubectl.run(
            "wait", "--for=condition=Established", "--timeout=30s", f"crd/{crd}",
            namespaced=False, check=False,
        ).returncode == 0  # fmt: skip

    for crd in ("workflows.ratline.dev", "workflowruns.ratline.dev"):
        # `kubectl wait` errors out (rather than waits) while a new CRD has no conditions yet.
        wait_for(f"{crd} to be Established", functools.partial(established, crd), timeout=90)
    # The API discovery of a fresh CRD can lag its Established condition.
    wait_for(
        "workflowruns to be served",
        lambda: kubectl.run("get", "workflowruns", check=False).returncode == 0,
        timeout=30,
    )
    return kubectl


@pytest.fixture
def effects_log() -> Iterator[str]:
    """A file worker processes append side effects to (readable by every test process)."""
    fd, path = tempfile.mkstemp(prefix="ratline-e2e-", suffix=".jsonl")
    os.close(fd)
    os.chmod(path, 0o666)
    try:
        yield path
    finally:
        os.unlink(path)


class OperatorProcess:
    """`python -m ratline.controller` for one namespace; restartable mid-test."""

    def __init__(self, kubeconfig: Path, namespace: str, dsn: str, log_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.dsn = dsn
        self.log_dir = log_dir
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.extra_args: list[str] = []

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        argv = [
            sys.executable, "-m", "ratline.controller",
            "--dsn", self.dsn,
            "--namespace", self.namespace,
            "--metrics-port", str(self.metrics_port),
            "--metrics-host", "127.0.0.1",
            "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
            "--status-interval", "0.3",
            "--idle-threshold", "1",
            "--backoff-initial", "0.5",
            "--backoff-max", "2",
            "--wake-poll", "0.3",
            "--standalone",
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
            )
        wait_for("the operator to be live", self._healthy, timeout=60)

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.logs()[-3000:]}")
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, *, kill: bool = False) -> int | None:
        """SIGTERM (or SIGKILL) and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def restart(self, *, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"operator-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
            if (self.log_dir / f"operator-{n}.log").exists()
        )

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())


@pytest.fixture
def operator(
    crds: Kubectl, cluster: Any, migrated_dsn: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator watching the test's namespace, plus the worker DSN Secret."""
    crds.run("create", "secret", "generic", "ratline-db", f"--from-literal=dsn={migrated_dsn}")
    process = OperatorProcess(Path(cluster.kubeconfig), crds.namespace, migrated_dsn, tmp_path)
    process.start()
    try:
        yield process
    finally:
        if process.alive:  # let the finalizers run, so the namespace can go away
            crds.run("delete", "workflowruns", "--all", "--wait", "--timeout=30s", check=False)
        process.stop()
        for run in crds.items("workflowruns"):  # anything left: drop its finalizer
            crds.patch_run(run["metadata"]["name"], {"metadata": {"finalizers": None}}, check=False)
        # Print the operator's log when the test failed (pytest shows captured output).
        sys.stdout.write(process.logs()[-20000:])
