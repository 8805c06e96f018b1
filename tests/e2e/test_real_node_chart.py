"""The Helm chart on the real node: the operator is a container from
`ghcr.io/ratline/operator:0.1.0`, Ready under the chart's namespaced RBAC in a namespace
that enforces Pod Security `restricted`, and drives the hello example (a container from
the examples image) to Succeeded; the chart's bundled Postgres StatefulSet runs too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.real_node_fixtures import RealCluster
from tests.e2e.conftest import Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ratline"
HELLO = REPO / "examples" / "hello"


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
