"""Pytest plugin: a real local Kubernetes control plane for e2e tests.

Fixtures:
- `cluster_crds` (session): CRD files (or directories of *.yaml) installed before the
  controllers start, so garbage collection of their objects' dependents is immediate (the
  garbage collector discovers CRDs created later only within ~30-40 s). Empty by default;
  override it in a conftest.py to opt in.
- `cluster` (session): a `Cluster` over a private `ControlPlane` (etcd, kube-apiserver,
  kube-controller-manager, the process kubelet), started only when a test asks for it and
  stopped at the end. `RATLINE_E2E_STATE=<dir>` reuses one started with
  `python -m tests.cluster.controlplane up --state <dir>` instead (fast iteration).
- `namespace`: a fresh namespace per test (uuid name) whose `default` ServiceAccount exists
  (pods can be created at once); deleted after the test without waiting.

Every test that uses `cluster` is marked `e2e`, so `-m "not e2e"` skips them all.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tests.cluster.binaries import MissingBinaryError
from tests.cluster.controlplane import NODE_NAME, ControlPlane, ControlPlaneError


class CommandError(subprocess.CalledProcessError):
    """A kubectl/helm call failed; unlike its base class it shows the command's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.stdout}"


@dataclass(frozen=True)
class Cluster:
    """How a test reaches the control plane: admin kubeconfig, tools, pod logs."""

    kubeconfig: Path
    bin_dir: Path  # holds kubectl and helm
    pod_dir: Path  # the process kubelet's work dir: <namespace>_<pod>/<container>.log
    node_name: str = NODE_NAME
    env: dict[str, str] = field(default_factory=dict)  # KUBECONFIG and PATH for subprocesses

    @classmethod
    def from_state(cls, state: Path, node_name: str = NODE_NAME) -> Cluster:
        """The cluster whose state directory `ControlPlane` (or the CLI `up`) wrote."""
        bin_dir = state / "bin"
        env = {
            **os.environ,
            "KUBECONFIG": str(state / "kubeconfig"),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HELM_CACHE_HOME": str(state / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(state / "helm" / "config"),
            "HELM_DATA_HOME": str(state / "helm" / "data"),
        }
        return cls(state / "kubeconfig", bin_dir, state / "pods", node_name, env)

    def _run(
        self, tool: str, args: tuple[str, ...], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / tool), *args]
        done = subprocess.run(
            argv, input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and done.returncode != 0:
            raise CommandError(done.returncode, argv, done.stdout, done.stderr)
        return done

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as the cluster admin."""
        return self._run("kubectl", args, input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run helm as the cluster admin (its caches live in the state dir)."""
        return self._run("helm", args, input, check, timeout)

    def api_client(self) -> k8s_client.ApiClient:
        """A new admin ApiClient; close it when done (it owns a connection pool)."""
        conf = k8s_client.Configuration()
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), client_configuration=conf
        )
        conf.no_proxy = ",".join(filter(None, [conf.no_proxy, "127.0.0.1", "localhost"]))
        return k8s_client.ApiClient(conf)

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """What the container wrote so far (also served to `kubectl logs`)."""
        path = self.pod_dir / f"{namespace}_{pod}" / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the control plane `e2e` (the marker is registered)."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster_crds() -> list[Path]:
    """CRDs to install before the controllers start (override in a conftest.py)."""
    return []


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster_crds: list[Path]
) -> Iterator[Cluster]:
    """The session's control plane, started on first use (about 6-9 s)."""
    reuse = os.environ.get("RATLINE_E2E_STATE")
    if reuse:
        state = Path(reuse).resolve()
        if not (state / "ready").exists():
            pytest.fail(f"RATLINE_E2E_STATE={state} has no running control plane", pytrace=False)
        yield Cluster.from_state(state)
        return
    state = tmp_path_factory.mktemp("kube")
    try:
        plane = ControlPlane(state, crds=cluster_crds).start()
    except (MissingBinaryError, ControlPlaneError) as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield Cluster.from_state(state, plane.node_name)
    finally:
        plane.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, ready for pods (its default ServiceAccount exists)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    with cluster.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        core.create_namespace(k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name)))
        wait_for_default_service_account(core, name)
        try:
            yield name
        finally:
            core.delete_namespace(name, propagation_policy="Background")


def wait_for_default_service_account(core: Any, namespace: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except k8s_client.ApiException as err:
            if err.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.05)
