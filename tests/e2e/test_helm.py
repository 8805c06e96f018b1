"""The Helm chart on the real control plane: install (migration hook, operator pod with
its own ServiceAccount and namespaced RBAC), an example run to Succeeded, upgrade,
uninstall keeping the CRDs and leaving nothing else behind; bad values refused.

The operator pod is started by the process kubelet as `python -m ratline.controller`
and talks to the API with its ServiceAccount token, so missing RBAC verbs fail here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.kube_fixtures import Cluster
from tests.e2e.conftest import Kubectl, free_port, run_manifest, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ratline"
HELLO = REPO / "examples" / "hello"
CRDS = ("workflows.ratline.dev", "workflowruns.ratline.dev")
NAMESPACED_KINDS = (
    "deployments,replicasets,pods,jobs,serviceaccounts,services,secrets,roles,rolebindings"
)
CLUSTER_KINDS = "clusterroles,clusterrolebindings"


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.helm(*args, check=check, timeout=300)


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def operator_pods(kubectl: Kubectl, release: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    return [
        p
        for p in kubectl.items("pods", "-l", selector)
        if not p["metadata"].get("deletionTimestamp")
    ]


def release_objects(kubectl: Kubectl, release: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    names = kubectl.run("get", NAMESPACED_KINDS, "-l", selector, "-o", "name").stdout.split()
    names += kubectl.run(
        "get", CLUSTER_KINDS, "-l", selector, "-o", "name", namespaced=False
    ).stdout.split()
    return names


@pytest.mark.timeout(420)
def test_install_run_upgrade_uninstall(
    cluster: Cluster, namespace: str, migrated_dsn: str, tmp_path: Path
) -> None:
    kubectl = Kubectl(cluster.kubeconfig, namespace)
    release = f"rl-{namespace[2:10]}"
    kubectl.run("create", "secret", "generic", "ratline-db", f"--from-literal=dsn={migrated_dsn}")
    values = values_file(
        tmp_path,
        {
            "rbac": {"scope": "namespace"},  # watch only this namespace: other tests run here too
            "database": {"existingSecret": "ratline-db"},
            "metrics": {"port": free_port()},  # pods share the host network
            "health": {"port": free_port()},
            "operator": {"statusInterval": 0.3, "idleThreshold": 1, "wakePoll": 0.3},
        },
    )
    # --take-ownership: other e2e tests may have applied the CRDs with kubectl already
    helm(cluster, "install", release, str(CHART), "-n", namespace, "-f", values,
         "--wait", "--timeout", "180s", "--take-ownership")  # fmt: skip

    # installed: one operator pod under its own ServiceAccount, the hook Job cleaned up
    (pod,) = operator_pods(kubectl, release)
    assert pod["spec"]["serviceAccountName"] == f"{release}-ratline"
    assert pod["spec"]["containers"][0]["command"][:3] == ["python", "-m", "ratline.controller"]
    assert f"--namespace={namespace}" in pod["spec"]["containers"][0]["command"]
    assert not kubectl.items("jobs")  # hook-succeeded deleted the migration Job
    for crd in CRDS:
        obj = json.loads(kubectl.run("get", "crd", crd, "-o", "json", namespaced=False).stdout)
        assert obj["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    status = json.loads(helm(cluster, "status", release, "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert "kubectl ratline describe hello-world" in status["info"]["notes"]

    # the example from the repository runs to the end under the chart's RBAC
    kubectl.run("apply", "-f", str(HELLO / "workflow.yaml"), "-f", str(HELLO / "run.yaml"))
    done = kubectl.wait_phase("hello-world", "Succeeded", timeout=90)
    assert json.loads(done["result"])["greeting"] == "Hello, WORLD! Hello, WORLD!"
    assert done["progress"] == "3/3"
    # least privilege, yet nothing the operator needs was denied (kopf's optional cluster-wide
    # CRD/namespace scanning is the only thing a namespaced install may not do)
    log = cluster.pod_log(namespace, pod["metadata"]["name"], "operator")
    assert "ratline.controller" in log or "kopf" in log, log[-2000:]
    denied = [
        line
        for line in log.splitlines()
        if ("403" in line or "forbidden" in line.lower())
        and "customresourcedefinitions" not in line
        and "namespaces" not in line
    ]
    assert not denied, "\n".join(denied[:10])

    # upgrade: a changed flag, a new migration hook run, a new operator pod that works
    helm(cluster, "upgrade", release, str(CHART), "-n", namespace, "-f", values,
         "--set", "operator.maxRetries=4", "--wait", "--timeout", "180s")  # fmt: skip
    wait_for(
        "the upgraded operator pod alone",
        lambda: (
            [
                p
                for p in operator_pods(kubectl, release)
                if "--max-retries=4" in p["spec"]["containers"][0]["command"]
            ]
            == operator_pods(kubectl, release)
            and len(operator_pods(kubectl, release)) == 1
        ),
        timeout=60,
    )
    (new_pod,) = operator_pods(kubectl, release)
    assert new_pod["metadata"]["name"] != pod["metadata"]["name"]
    history = json.loads(helm(cluster, "history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]
    kubectl.apply(run_manifest("hello-after-upgrade", "hello", {"name": "again"}))
    kubectl.wait_phase("hello-after-upgrade", "Succeeded", timeout=90)

    # uninstall: the operator and everything the chart made go; CRDs and runs stay
    helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    wait_for("the release's objects to be gone", lambda: not release_objects(kubectl, release),
             timeout=60)  # fmt: skip
    assert not operator_pods(kubectl, release)
    for crd in CRDS:
        kubectl.run("get", "crd", crd, namespaced=False)  # still there
    assert kubectl.get("workflowrun", "hello-world") is not None  # user data kept
    listing = helm(cluster, "list", "-n", namespace, "-q").stdout.split()
    assert release not in listing

    # clean up the runs the (now gone) operator would have finalized
    for run in kubectl.items("workflowruns"):
        kubectl.patch_run(run["metadata"]["name"], {"metadata": {"finalizers": None}})
    kubectl.run("delete", "workflowruns", "--all", "--wait", "--timeout=30s")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no database configured. Set database.existingSecret"),
        (("--set", "database.existingSecret=db", "--set", "operator.replicas=3"),
         "needs operator.peering.enabled"),
        (("--set", "database.existingSecret=db", "--set", "operator.maxRetries=-1"),
         "/operator/maxRetries"),
    ],
)  # fmt: skip
def test_bad_values_fail_the_install_clearly(
    cluster: Cluster, namespace: str, args: tuple[str, ...], message: str
) -> None:
    release = f"bad-{namespace[2:10]}"
    done = helm(cluster, "install", release, str(CHART), "-n", namespace, *args, check=False)
    assert done.returncode != 0
    assert message in done.stderr
    assert release not in helm(cluster, "list", "-n", namespace, "-q", "-a").stdout.split()
    kubectl = Kubectl(cluster.kubeconfig, namespace)
    assert not kubectl.items("deployments")
