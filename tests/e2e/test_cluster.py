"""The local control plane and the process kubelet behave like a cluster where the tests rely on
it: controllers run, pods run as real processes with real status, deletion kills them, garbage
collection, CRD status subresources, Secret env and ServiceAccount RBAC are real."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import controlplane
from tests.cluster.binaries import BinDirs, MissingBinaryError
from tests.cluster.controlplane import REPO_ROOT, ControlPlane, free_port
from tests.cluster.kube_fixtures import Cluster

pytestmark = pytest.mark.e2e

BIND_TO_RUNNING_LIMIT_S = 5.0


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `check()` returns something truthy; fail naming `what` and its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def get(cluster: Cluster, *args: str) -> dict[str, Any] | None:
    """`kubectl get -o json`, or None when the object does not exist."""
    done = cluster.kubectl("get", *args, "-o", "json", check=False)
    if done.returncode != 0:
        assert "NotFound" in done.stderr, done.stderr
        return None
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def apply(cluster: Cluster, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "ratline.test/none:1", "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def pod_phase(cluster: Cluster, namespace: str, name: str) -> str:
    obj = get(cluster, "pod", name, "-n", namespace)
    return "" if obj is None else str(obj.get("status", {}).get("phase", ""))


def pid_of(status: dict[str, Any]) -> int:
    container_id: str = status["containerStatuses"][0]["containerID"]
    assert container_id.startswith("process://"), container_id
    return int(container_id.removeprefix("process://"))


def process_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_deployment_pod_runs_as_a_local_process(cluster: Cluster, namespace: str) -> None:
    marker = f"deploy-{uuid.uuid4().hex}"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "ratline.test/web:1",
                            "command": ["python", "-c", "import time; time.sleep(600)", marker],
                        }
                    ]
                },
            },
        },
    }
    apply(cluster, namespace, deployment)

    def running_pod() -> dict[str, Any] | None:
        pods = get(cluster, "pods", "-n", namespace, "-l", "app=web")
        items = pods["items"] if pods else []
        ready = [p for p in items if p.get("status", {}).get("phase") == "Running"]
        return ready[0] if ready else None

    found = wait_for(running_pod, 60, "the Deployment's pod to be Running")
    assert found["spec"]["nodeName"] == cluster.node_name
    conditions = {c["type"]: c["status"] for c in found["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    pid = pid_of(found["status"])
    assert marker in process_cmdline(pid)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"HOSTNAME={found['metadata']['name']}".encode() in environ
    cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=30s")


def test_pod_bind_to_running_latency_is_small(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, pod("quick", ["python", "-c", "import time; time.sleep(600)"]))
    bound = wait_for(
        lambda: (
            (get(cluster, "pod", "quick", "-n", namespace) or {}).get("spec", {}).get("nodeName")
        ),
        30,
        "the pod to be bound",
    )
    began = time.monotonic()
    wait_for(lambda: pod_phase(cluster, namespace, "quick") == "Running", 30, "Running")
    latency = time.monotonic() - began
    assert bound == cluster.node_name
    assert latency < BIND_TO_RUNNING_LIMIT_S, f"bind to Running took {latency:.2f}s"


def test_failing_command_ends_the_pod_failed_with_its_exit_code(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, namespace, pod("exits-3", ["python", "-c", "import sys; sys.exit(3)"]))
    wait_for(lambda: pod_phase(cluster, namespace, "exits-3") == "Failed", 30, "phase Failed")
    obj = get(cluster, "pod", "exits-3", "-n", namespace)
    assert obj is not None
    terminated = obj["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"


def test_deleting_a_running_pod_terminates_its_process(cluster: Cluster, namespace: str) -> None:
    marker = f"victim-{uuid.uuid4().hex}"
    apply(
        cluster, namespace, pod("victim", ["python", "-c", "import time; time.sleep(600)", marker])
    )
    wait_for(lambda: pod_phase(cluster, namespace, "victim") == "Running", 30, "phase Running")
    obj = get(cluster, "pod", "victim", "-n", namespace)
    assert obj is not None
    pid = pid_of(obj["status"])
    assert marker in process_cmdline(pid)

    cluster.kubectl("delete", "pod", "victim", "-n", namespace, "--timeout=30s")

    assert marker not in process_cmdline(pid)  # gone (or the pid now belongs to another process)
    assert get(cluster, "pod", "victim", "-n", namespace) is None


def test_owner_deletion_garbage_collects_the_child(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = get(cluster, "configmap", "owner", "-n", namespace)
    assert owner is not None
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
        "data": {"k": "v"},
    }
    apply(cluster, namespace, child)
    assert get(cluster, "configmap", "child", "-n", namespace) is not None

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    wait_for(lambda: get(cluster, "configmap", "child", "-n", namespace) is None, 60, "GC")


def widget_crd(group: str) -> dict[str, Any]:
    """A namespaced CRD `widgets.<group>` with a status subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def test_crd_status_subresource_can_be_patched(cluster: Cluster) -> None:
    group = f"t{uuid.uuid4().hex[:10]}.ratline.test"
    crd = widget_crd(group)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd))
    try:
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=30s"
        )
        widget = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        cluster.kubectl("apply", "-n", "default", "-f", "-", input=yaml.safe_dump(widget))
        resource = f"widgets.{group}/w1"
        # The main resource ignores status; only the subresource writes it.
        cluster.kubectl(
            "patch",
            resource,
            "-n",
            "default",
            "--type=merge",
            "-p",
            '{"status": {"phase": "Ignored"}}',
        )
        cluster.kubectl(
            "patch",
            resource,
            "-n",
            "default",
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"phase": "Ready"}}',
        )
        stored = get(cluster, resource, "-n", "default")
        assert stored is not None
        assert stored["status"] == {"phase": "Ready"}
        assert stored["spec"] == {"size": 3}
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def test_env_from_a_secret_reaches_the_process(cluster: Cluster, namespace: str) -> None:
    secret_value = uuid.uuid4().hex
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        namespace,
        f"--from-literal=password={secret_value}",
        "--from-literal=user=ada",
    )
    script = "import os; print(os.environ['PASSWORD'], os.environ['CREDS_user'])"
    spec = pod(
        "env-reader",
        ["python", "-c", script],
        container={
            "env": [
                {
                    "name": "PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                }
            ],
            "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "CREDS_"}],
        },
    )
    apply(cluster, namespace, spec)
    wait_for(lambda: pod_phase(cluster, namespace, "env-reader") == "Succeeded", 30, "Succeeded")
    logs = cluster.kubectl("logs", "env-reader", "-n", namespace).stdout  # via the kubelet's server
    assert logs.strip() == f"{secret_value} ada"


def test_service_account_token_grants_exactly_its_rbac(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl(
        "create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", namespace
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    checks = (
        'echo "host=${KUBERNETES_SERVICE_HOST:-unset}"; '
        "kubectl auth whoami -o jsonpath='user={.status.userInfo.username}{\"\\n\"}'; "
        'echo "cm=$(kubectl auth can-i list configmaps)"; '
        'echo "secrets=$(kubectl auth can-i get secrets)"; '
        'echo "other-ns=$(kubectl auth can-i list configmaps -n kube-system)"'
    )
    apply(cluster, namespace, pod("rbac", ["sh", "-c", checks], serviceAccountName="reader"))
    wait_for(lambda: pod_phase(cluster, namespace, "rbac") == "Succeeded", 60, "Succeeded")
    output = cluster.pod_log(namespace, "rbac", "main").split()
    assert output == [
        "host=unset",
        f"user=system:serviceaccount:{namespace}:reader",
        "cm=yes",
        "secrets=no",
        "other-ns=no",
    ]


def test_pod_without_automounted_token_gets_no_credentials(
    cluster: Cluster, namespace: str
) -> None:
    script = "import os; print(os.environ.get('KUBECONFIG', 'none'))"
    spec = pod("no-token", ["python", "-c", script], automountServiceAccountToken=False)
    apply(cluster, namespace, spec)
    wait_for(lambda: pod_phase(cluster, namespace, "no-token") == "Succeeded", 30, "Succeeded")
    assert cluster.pod_log(namespace, "no-token", "main").strip() == "none"


def test_missing_binary_names_the_fix(tmp_path: Path) -> None:
    dirs = BinDirs(kube=tmp_path / "kube", etcd=tmp_path / "etcd", helm=tmp_path / "helm")
    with pytest.raises(MissingBinaryError) as caught:
        dirs.path("kube-apiserver")
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "kube" / "kube-apiserver") in message
    assert "make binaries" in message


def test_cluster_tools_point_at_the_private_control_plane(cluster: Cluster) -> None:
    assert os.environ.get("KUBECONFIG") != cluster.env["KUBECONFIG"]  # never leaks into pytest
    nodes = cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout
    assert nodes == cluster.node_name
    assert cluster.helm("version", "--short").stdout.startswith("v3.")


def test_init_containers_run_first_and_on_failure_restarts(
    cluster: Cluster, namespace: str
) -> None:
    main = "test -f init-done || exit 9; test -f ran-once && exit 0; touch ran-once; exit 1"
    spec = pod(
        "restarts",
        ["sh", "-c", main],
        restartPolicy="OnFailure",
        initContainers=[
            {
                "name": "init",
                "image": "ratline.test/none:1",
                "command": ["sh", "-c", "touch init-done"],
            }
        ],
    )
    apply(cluster, namespace, spec)
    wait_for(lambda: pod_phase(cluster, namespace, "restarts") == "Succeeded", 30, "Succeeded")
    status = (get(cluster, "pod", "restarts", "-n", namespace) or {})["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    main_status = status["containerStatuses"][0]
    assert main_status["restartCount"] == 1
    assert main_status["lastState"]["terminated"]["exitCode"] == 1
    assert main_status["state"]["terminated"]["exitCode"] == 0


def test_readiness_probes_are_run(cluster: Cluster, namespace: str) -> None:
    port, closed_port = free_port(), free_port()
    serve = f"sleep 1; exec python -m http.server {port} --bind 127.0.0.1"
    probe = {"httpGet": {"path": "/", "port": port}, "periodSeconds": 30}
    never = {"tcpSocket": {"port": closed_port}, "periodSeconds": 1}
    apply(
        cluster,
        namespace,
        pod("serves", ["sh", "-c", serve], container={"readinessProbe": probe}),
        pod("never-ready", ["sleep", "600"], container={"readinessProbe": never}),
    )

    def ready(name: str) -> str:
        obj = get(cluster, "pod", name, "-n", namespace) or {}
        conditions = obj.get("status", {}).get("conditions", [])
        return next((c["status"] for c in conditions if c["type"] == "Ready"), "")

    # Ready long before periodSeconds (30 s): failed probes are retried every second until the
    # first success.
    wait_for(lambda: ready("serves") == "True", 10, "the serving pod to be Ready")
    wait_for(lambda: pod_phase(cluster, namespace, "never-ready") == "Running", 30, "Running")
    time.sleep(2)
    assert ready("never-ready") == "False"


def test_node_is_ready_and_renews_its_lease(cluster: Cluster) -> None:
    node = get(cluster, "node", cluster.node_name)
    assert node is not None
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    lease = get(cluster, "lease", cluster.node_name, "-n", "kube-node-lease")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == cluster.node_name
    renewed = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
    assert (datetime.now(UTC) - renewed).total_seconds() < 30


def test_cli_runs_a_second_control_plane_side_by_side(cluster: Cluster, tmp_path: Path) -> None:
    state, group = tmp_path / "second", f"t{uuid.uuid4().hex[:10]}.ratline.test"
    crd_file = tmp_path / "widgets.yaml"
    crd_file.write_text(yaml.safe_dump(widget_crd(group)))
    cli = [sys.executable, "-m", "tests.cluster.controlplane"]
    up = subprocess.run(
        [*cli, "up", "--state", str(state), f"--crd={crd_file}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"export KUBECONFIG={state / 'kubeconfig'}"
        pids = json.loads((state / "ready").read_text())["pids"]
        second = Cluster.from_state(state)
        servers = {
            c.kubectl(
                "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
            ).stdout
            for c in (cluster, second)
        }
        assert len(servers) == 2
        assert second.kubectl("get", "nodes", "-o", "name").stdout.strip() == "node/ratline-node"
        assert cluster.kubectl("get", "nodes", "-o", "name").stdout.strip() == "node/ratline-node"
        # The CRD was there before the garbage collector started: dependents go at once.
        widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"}}
        second.kubectl("apply", "-n", "default", "-f", "-", input=yaml.safe_dump(widget))
        owner = get(second, f"widgets.{group}/w1", "-n", "default") or {}
        reference = {"apiVersion": f"{group}/v1", "kind": "Widget", "name": "w1",
                     "uid": owner["metadata"]["uid"]}  # fmt: skip
        child = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "child", "ownerReferences": [reference]}}  # fmt: skip
        second.kubectl("apply", "-n", "default", "-f", "-", input=yaml.safe_dump(child))
        second.kubectl("delete", f"widgets.{group}/w1", "-n", "default")
        wait_for(lambda: get(second, "configmap", "child", "-n", "default") is None, 15, "GC")
    finally:
        down = subprocess.run(
            [*cli, "down", "--state", str(state)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    assert all(process_cmdline(pid) == "" for pid in pids.values()), pids


def test_a_port_taken_before_etcd_binds_is_picked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, busy])  # etcd's first attempt gets a port someone else holds
        real_free_port = controlplane.free_port
        monkeypatch.setattr(controlplane, "free_port", lambda: next(picks, 0) or real_free_port())
        plane = ControlPlane(tmp_path / "cp", kubelet=False)
        plane.log_dir.mkdir(parents=True)
        try:
            url = plane._start_etcd()
        finally:
            plane.stop()
    assert url.startswith("http://127.0.0.1:")
    assert not url.endswith(f":{busy}")
    assert "address already in use" in (plane.log_dir / "etcd.log").read_text()


def test_kubectl_logs_follows_and_tails(cluster: Cluster, namespace: str) -> None:
    script = "for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done"
    apply(cluster, namespace, pod("talker", ["sh", "-c", script]))
    wait_for(lambda: pod_phase(cluster, namespace, "talker") == "Running", 30, "Running")
    followed = cluster.kubectl("logs", "-f", "talker", "-n", namespace, timeout=30).stdout
    assert followed.split() == [f"line-{i}" for i in range(1, 6)]  # returns once it exits
    tailed = cluster.kubectl("logs", "--tail=2", "talker", "-n", namespace).stdout
    assert tailed.split() == ["line-4", "line-5"]
