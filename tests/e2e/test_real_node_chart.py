"""The Helm chart on the real node: the operator is a container from
`ghcr.io/ratline/operator:0.1.0`, Ready under the chart's namespaced RBAC in a namespace
that enforces Pod Security `restricted`, and drives the hello example (a container from
the examples image) to Succeeded; the chart's bundled Postgres StatefulSet runs too.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.node import build_images
from tests.cluster.real_node_fixtures import RealCluster
from tests.e2e.conftest import Kubectl, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ratline"
HELLO = REPO / "examples" / "hello"
RELEASE_PG = "rl-postgresql"  # fullnameOverride "rl" + the chart's suffix


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_chart_operator_container_runs_hello(
    real_cluster: RealCluster, real_namespace: str, real_db: tuple[str, str], tmp_path: Path
) -> None:
    cluster = real_cluster.cluster
    kubectl = Kubectl(cluster.kubeconfig, real_namespace)
    _, pod_dsn = real_db
    kubectl.run("create", "secret", "generic", "ratline-db", f"--from-literal=dsn={pod_dsn}")
    release = f"rl-{real_namespace[2:10]}"
    values = values_file(
        tmp_path,
        {
            "rbac": {"scope": "namespace"},
            "database": {"existingSecret": "ratline-db"},
            "operator": {"statusInterval": 0.3, "idleThreshold": 1, "wakePoll": 0.3},
        },
    )
    cluster.helm("install", release, str(CHART), "-n", real_namespace, "-f", values,
                 "--wait", "--timeout", "300s", "--take-ownership", timeout=420)  # fmt: skip

    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    (pod,) = kubectl.items("pods", "-l", selector)
    (container,) = pod["status"]["containerStatuses"]
    assert container["ready"] is True
    assert container["containerID"].startswith("containerd://")
    assert container["image"].endswith("ratline/operator:0.1.0")
    assert pod["spec"]["serviceAccountName"] == f"{release}-ratline"

    kubectl.run("apply", "-f", str(HELLO / "workflow.yaml"), "-f", str(HELLO / "run.yaml"))
    done = kubectl.wait_phase("hello-world", "Succeeded", "Failed", timeout=300)
    assert done["phase"] == "Succeeded", done
    assert json.loads(done["result"])["greeting"] == "Hello, WORLD! Hello, WORLD!"
    (worker,) = kubectl.worker_pods("hello-world")
    assert worker["spec"]["containers"][0]["image"] == "ghcr.io/ratline/examples:0.1.0"

    # Least privilege, yet nothing the operator needed was denied.
    log = kubectl.run("logs", pod["metadata"]["name"]).stdout
    denied = [
        line
        for line in log.splitlines()
        if ("403" in line or "forbidden" in line.lower())
        and "customresourcedefinitions" not in line
        and "namespaces" not in line
    ]
    assert not denied, "\n".join(denied[:10])

    kubectl.run("delete", "workflowruns", "--all", "--wait", "--timeout=60s")
    cluster.helm("uninstall", release, "-n", real_namespace, "--wait", "--timeout", "120s")


def test_chart_bundled_postgres_statefulset_runs(
    real_cluster: RealCluster, real_namespace: str, tmp_path: Path
) -> None:
    """postgresql.enabled: the StatefulSet's pod (Debian's Postgres as uid 70, image
    `ratline.local/postgres:15`) gets its PVC bound to a hostPath PV, passes Pod Security
    `restricted`, becomes Ready and serves its database. The operator is scaled to 0 and
    the migration hook is off: the chart's DSN names the Service by DNS, which this
    cluster has no server for."""
    cluster = real_cluster.cluster
    kubectl = Kubectl(cluster.kubeconfig, real_namespace)
    plane = real_cluster.plane
    assert plane.slot is not None
    images = build_images()
    sock = str(real_cluster.containerd_socket)
    subprocess.run(
        ["ctr", "--address", sock, "-n", "k8s.io", "images", "import",
         str(images / "postgres.tar")],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    data = plane.slot.var_dir / "pv" / real_namespace
    data.mkdir(parents=True)
    os.chown(data, 70, 70)
    pv = f"pv-{real_namespace}"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "8Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "",
                "claimRef": {"namespace": real_namespace, "name": f"data-{RELEASE_PG}-0"},
                "hostPath": {"path": str(data), "type": "Directory"},
            },
        }
    )
    values = values_file(
        tmp_path,
        {
            "fullnameOverride": "rl",
            "operator": {"replicas": 0},
            "migration": {"enabled": False},
            "postgresql": {
                "enabled": True,
                "image": {"repository": "ratline.local/postgres", "tag": "15"},
            },
        },
    )
    try:
        cluster.helm("install", "db", str(CHART), "-n", real_namespace, "-f", values,
                     "--take-ownership", timeout=300)  # fmt: skip
        wait_for("the StatefulSet's pod", lambda: kubectl.get("pod", f"{RELEASE_PG}-0"), 120)
        kubectl.run("wait", "--for=condition=Ready", f"pod/{RELEASE_PG}-0", "--timeout=240s")
        who = kubectl.run(
            "exec", f"{RELEASE_PG}-0", "--", "psql", "-h", "/var/run/postgresql",
            "-U", "ratline", "-d", "ratline", "-tAc",
            "SELECT current_user || '@' || current_database()",
        ).stdout.strip()  # fmt: skip
        assert who == "ratline@ratline"
        pod = kubectl.get("pod", f"{RELEASE_PG}-0")
        assert pod is not None
        assert pod["spec"]["containers"][0]["securityContext"]["runAsUser"] == 70
        assert (data / "pgdata" / "PG_VERSION").exists()  # on the hostPath PV
    finally:
        cluster.helm("uninstall", "db", "-n", real_namespace, "--wait", check=False)
        kubectl.run("delete", "pvc", "--all", "--wait=false", check=False)
        kubectl.run("delete", "pv", pv, "--wait=false", namespaced=False, check=False)
