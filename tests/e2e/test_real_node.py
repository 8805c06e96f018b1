"""The real node: workers are containerd containers from the images `worker-image/build.sh`
builds, admitted under Pod Security `restricted`, limited by real cgroups.

The operator runs on the host here (as in the other e2e tests) and watches one namespace;
`test_real_node_chart.py` runs it from its image through the Helm chart. Every test
shares the session's real-node cluster (`real_cluster`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.cluster.real_node_fixtures import RealCluster
from tests.e2e.conftest import (
    Kubectl,
    OperatorProcess,
    run_manifest,
    unique,
    wait_for,
    workflow_manifest,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

FLOWS = "tests.e2e.node_flows.flows"


@pytest.fixture
def node_kubectl(real_cluster: RealCluster, real_namespace: str) -> Kubectl:
    return Kubectl(real_cluster.cluster.kubeconfig, real_namespace)


@pytest.fixture
def node_operator(
    node_kubectl: Kubectl, real_cluster: RealCluster, real_db: tuple[str, str], tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator on the host (host DSN); workers get the pods' DSN from `ratline-db`."""
    host_dsn, pod_dsn = real_db
    node_kubectl.run("create", "secret", "generic", "ratline-db", f"--from-literal=dsn={pod_dsn}")
    process = OperatorProcess(
        real_cluster.cluster.kubeconfig, node_kubectl.namespace, host_dsn, tmp_path
    )
    process.start()
    try:
        yield process
    finally:
        if process.alive:
            node_kubectl.run(
                "delete", "workflowruns", "--all", "--wait", "--timeout=60s", check=False
            )
        process.stop()
        for run in node_kubectl.items("workflowruns"):
            node_kubectl.patch_run(
                run["metadata"]["name"], {"metadata": {"finalizers": None}}, check=False
            )
        print(process.logs()[-20000:])


def effects(dsn: str, key: str) -> list[tuple[int, str]]:
    """(step, op) rows the node_flows steps recorded for `key`, in insertion order."""

    async def fetch() -> list[tuple[int, str]]:
        conn = await asyncpg.connect(dsn)
        try:
            exists = await conn.fetchval("SELECT to_regclass('node_effects') IS NOT NULL")
            if not exists:
                return []
            rows = await conn.fetch(
                "SELECT step, op FROM node_effects WHERE key = $1 ORDER BY at, ctid", key
            )
            return [(int(r["step"]), str(r["op"])) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def worker_spec(**extra: Any) -> dict[str, Any]:
    return {"image": "ratline-e2e:local", **extra}


def test_node_runs_containerd(real_cluster: RealCluster) -> None:
    wide = real_cluster.cluster.kubectl("get", "nodes", "-o", "wide").stdout
    assert "containerd://1." in wide, wide
    assert real_cluster.plane.slot is not None
    assert real_cluster.plane.slot.node_ip in wide


def test_restricted_namespace_rejects_a_privileged_pod(node_kubectl: Kubectl) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "ratline-e2e:local",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    refused = node_kubectl.create(pod, check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
    assert "restricted" in refused.stderr


def test_worker_sandbox_uid_readonly_root_no_token(
    node_kubectl: Kubectl, node_operator: OperatorProcess
) -> None:
    node_kubectl.apply(workflow_manifest("whoami", f"{FLOWS}:whoami", **worker_spec()))
    node_kubectl.apply(run_manifest("who", "whoami", {}))
    status = node_kubectl.wait_phase("who", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status
    result = json.loads(status["result"])
    assert result["uid"] == 65532
    assert result["gid"] == 65532
    assert result["root_writable"] is False
    assert result["token_mounted"] is False
    # It ran in a container of the pod the operator made: the pod's hostname, not ours.
    (pod,) = node_kubectl.worker_pods("who")
    assert result["hostname"] == pod["metadata"]["name"] != os.uname().nodename
    (container,) = pod["status"]["containerStatuses"]
    assert container["containerID"].startswith("containerd://")


def host_pid(real_cluster: RealCluster, container_id: str) -> int:
    """The host pid of a running container's process, as containerd reports it."""
    listing = subprocess.run(
        ["ctr", "--address", str(real_cluster.containerd_socket), "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    for line in listing.splitlines()[1:]:
        task, pid, state = line.split()
        if task == container_id and state == "RUNNING":
            return int(pid)
    raise AssertionError(f"container {container_id} is not running:\n{listing}")


def running_container(kubectl: Kubectl, run: str) -> str | None:
    for pod in kubectl.live_worker_pods(run):
        for status in pod.get("status", {}).get("containerStatuses") or []:
            if "running" in (status.get("state") or {}):
                return str(status["containerID"]).removeprefix("containerd://")
    return None


def test_worker_sigkilled_by_host_pid_is_replaced_without_repeating_steps(
    node_kubectl: Kubectl,
    node_operator: OperatorProcess,
    real_cluster: RealCluster,
    real_db: tuple[str, str],
) -> None:
    host_dsn, _ = real_db
    key = unique("kill")
    node_kubectl.apply(workflow_manifest("steps", f"{FLOWS}:steps", **worker_spec()))
    node_kubectl.apply(run_manifest("killed", "steps", {"key": key, "steps": 3, "step_seconds": 8}))
    wait_for(
        "step 2 to start",
        lambda: (2, "start") in effects(host_dsn, key),
        timeout=240,
        interval=0.3,
    )
    container = wait_for(
        "a running worker container", lambda: running_container(node_kubectl, "killed")
    )
    (first_pod,) = node_kubectl.live_worker_pods("killed")
    os.kill(host_pid(real_cluster, container), signal.SIGKILL)
    at_kill = effects(host_dsn, key)
    done_before = {step for step, op in at_kill if op == "end"}
    (cut,) = {step for step, op in at_kill if op == "start"} - done_before  # the step cut off

    status = node_kubectl.wait_phase("killed", "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Succeeded", status
    assert json.loads(status["result"]) == {"total": 6}
    rows = effects(host_dsn, key)
    assert sorted(step for step, op in rows if op == "end") == [1, 2, 3], rows  # each once
    for step in done_before:
        assert rows.count((step, "start")) == 1, rows  # completed: never ran again
    assert rows.count((cut, "start")) == 2, rows  # cut off mid-step: ran again, once
    # The killed pod's exit was seen and a new pod finished the run.
    assert status["lastExit"]["pod"] == first_pod["metadata"]["name"], status
    assert status["retries"] >= 1, status


def test_worker_over_its_memory_limit_is_oomkilled_and_the_run_recovers(
    node_kubectl: Kubectl, node_operator: OperatorProcess, real_db: tuple[str, str]
) -> None:
    host_dsn, _ = real_db
    key = unique("oom")
    limits = {"resources": {"limits": {"memory": "160Mi"}, "requests": {"memory": "64Mi"}}}
    node_kubectl.apply(workflow_manifest("hog", f"{FLOWS}:hog", **worker_spec(podTemplate=limits)))
    node_kubectl.apply(run_manifest("hungry", "hog", {"key": key, "mebibytes": 400}))
    status = node_kubectl.wait_phase("hungry", "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Succeeded", status
    assert status["result"] == "recovered"  # a string result is shown as is
    assert effects(host_dsn, key).count((1, "hog")) == 2
    # The kernel's verdict reached the run: the operator's event on it names OOMKilled
    # (status.lastExit says so too until the replacement pod exits).
    events = node_kubectl.items("events", "--field-selector", "involvedObject.name=hungry")
    restarts = [e["message"] for e in events if e.get("reason") == "WorkerRestarting"]
    assert any("OOMKilled, exit code 137" in m for m in restarts), restarts
    assert status["retries"] >= 1, status


def test_image_not_on_the_node_gives_a_clear_condition(
    node_kubectl: Kubectl, node_operator: OperatorProcess
) -> None:
    node_kubectl.apply(
        workflow_manifest(
            "absent", f"{FLOWS}:whoami", image="registry.invalid/ratline/absent:0.0.1"
        )
    )
    node_kubectl.apply(run_manifest("nowhere", "absent", {}))

    def pending_condition() -> dict[str, Any] | None:
        for cond in node_kubectl.status("nowhere").get("conditions") or []:
            if cond.get("type") == "WorkerPending" and cond.get("status") == "True":
                return dict(cond)
        return None

    cond = wait_for("a WorkerPending condition", pending_condition, timeout=240)
    assert cond["reason"] in ("ErrImagePull", "ImagePullBackOff"), cond
    assert "registry.invalid/ratline/absent:0.0.1" in cond["message"], cond
    assert node_kubectl.status("nowhere").get("phase") in ("Pending", "Running")
