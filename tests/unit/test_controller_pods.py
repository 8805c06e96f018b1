"""Worker pod manifests and exit classification (pure; docs/architecture.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ratline.controller.pods import (
    ExitAction,
    WorkerPodParams,
    backoff_delay,
    build_worker_pod,
    label_value,
    pod_exit,
    pod_stuck,
    worker_pod_name,
)

UID = "5f0c4a3e-1111-2222-3333-444455556666"


def params(**extra: Any) -> WorkerPodParams:
    base: dict[str, Any] = {
        "run_name": "order-42",
        "run_uid": UID,
        "namespace": "shop",
        "workflow": "order",
        "image": "registry.local/order:1.2",
        "entrypoint": "shop.flows:order",
        "attempt": 3,
        "idle_threshold": 2.5,
    }
    base.update(extra)
    return WorkerPodParams(**base)


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    container = pod["spec"]["containers"][0]
    return {item["name"]: item for item in container["env"]}


def test_pod_follows_the_contract() -> None:
    pod = build_worker_pod(params())
    meta = pod["metadata"]
    assert meta["name"] == "order-42-w3"
    assert meta["namespace"] == "shop"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "ratline",
        "ratline.dev/run": "order-42",
        "ratline.dev/run-uid": UID,
        "ratline.dev/workflow": "order",
        "ratline.dev/attempt": "3",
    }
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "ratline.dev/v1alpha1",
        "kind": "WorkflowRun",
        "name": "order-42",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["name"] == "worker"
    assert container["image"] == "registry.local/order:1.2"
    assert container["command"] == ["python", "-m", "ratline.worker"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_worker_env() -> None:
    env = env_of(build_worker_pod(params(dsn_secret="db-creds", dsn_key="url")))
    assert env["RATLINE_RUN_ID"]["value"] == UID
    assert env["RATLINE_ENTRYPOINT"]["value"] == "shop.flows:order"
    assert env["RATLINE_IDLE_THRESHOLD"]["value"] == "2.5"
    assert env["RATLINE_ATTEMPT"]["value"] == "3"
    assert env["RATLINE_WORKER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["RATLINE_DSN"]["valueFrom"] == {"secretKeyRef": {"name": "db-creds", "key": "url"}}


def test_pod_template_is_merged_but_cannot_override_ratline_env() -> None:
    template = {
        "resources": {"limits": {"memory": "256Mi"}},
        "env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "RATLINE_DSN", "value": "x"}],
        "envFrom": [{"secretRef": {"name": "api-keys"}}],
        "serviceAccountName": "order-worker",
        "nodeSelector": {"pool": "batch"},
        "tolerations": [{"key": "batch", "operator": "Exists"}],
        "imagePullSecrets": [{"name": "regcred"}],
        "priorityClassName": "low",
        "securityContext": {"fsGroup": 2000},
    }
    pod = build_worker_pod(params(pod_template=template))
    spec = pod["spec"]
    container = spec["containers"][0]
    env = env_of(pod)
    assert env["LOG_LEVEL"]["value"] == "debug"
    assert "value" not in env["RATLINE_DSN"]
    assert [e["name"] for e in container["env"]].count("RATLINE_DSN") == 1
    assert container["resources"] == {"limits": {"memory": "256Mi"}}
    assert container["envFrom"] == [{"secretRef": {"name": "api-keys"}}]
    assert spec["serviceAccountName"] == "order-worker"
    assert spec["automountServiceAccountToken"] is False
    assert spec["nodeSelector"] == {"pool": "batch"}
    assert spec["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["priorityClassName"] == "low"
    assert spec["securityContext"]["fsGroup"] == 2000
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_long_names_are_truncated_and_distinct() -> None:
    long_name = "a" * 120
    first = worker_pod_name(long_name, UID, 12)
    second = worker_pod_name(long_name, "99999999-0000-0000-0000-000000000000", 12)
    assert len(first) <= 63
    assert first.endswith("-w12")
    assert first != second
    assert worker_pod_name("short", UID, 1) == "short-w1"
    label = label_value("x" * 100 + ".")
    assert len(label) <= 63
    assert label[-1].isalnum()


def pod_with(phase: str, code: int | None = None, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if code is not None:
        terminated: dict[str, Any] = {"exitCode": code}
        if reason:
            terminated["reason"] = reason
        status["containerStatuses"] = [{"name": "worker", "state": {"terminated": terminated}}]
    elif reason:
        status["reason"] = reason
    return {"metadata": {"name": "p-w1"}, "status": status}


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (0, ExitAction.PROJECT),
        (65, ExitAction.INPUT_INVALID),
        (66, ExitAction.ENTRYPOINT_INVALID),
        (2, ExitAction.CONFIG_INVALID),
        (69, ExitAction.RETRY),
        (75, ExitAction.RETRY),
        (1, ExitAction.RETRY),
        (137, ExitAction.RETRY),
    ],
)
def test_exit_codes(code: int, action: ExitAction) -> None:
    ended = pod_exit(pod_with("Failed" if code else "Succeeded", code))
    assert ended is not None
    assert ended.code == code
    assert ended.action is action


def test_running_pod_has_no_exit_but_deleted_or_evicted_is_a_crash() -> None:
    assert pod_exit(pod_with("Running")) is None
    assert pod_exit(pod_with("Pending")) is None
    gone = pod_exit(pod_with("Running"), deleted=True)
    assert gone is not None
    assert gone.reason == "PodDeleted"
    assert gone.action is ExitAction.RETRY
    evicted = pod_exit(pod_with("Failed", reason="Evicted"))
    assert evicted is not None
    assert evicted.reason == "Evicted"
    assert evicted.action is ExitAction.RETRY


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n, 1.0, 30.0) for n in range(0, 8)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(10_000, 1.0, 60.0) == 60.0


def test_stuck_worker_is_recognised() -> None:
    waiting = {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "worker",
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "ratline-db" not found',
                    }
                },
            }
        ],
    }
    assert pod_stuck({"status": waiting}) == (
        "CreateContainerConfigError",
        'secret "ratline-db" not found',
    )
    creating = {"containerStatuses": [{"name": "worker", "state": {"waiting": {
        "reason": "ContainerCreating"}}}]}  # fmt: skip
    assert pod_stuck({"status": creating}) is None
    assert pod_stuck({"status": {"phase": "Pending"}}) is None


def test_workflow_default_retry_reaches_the_worker_as_json() -> None:
    params = WorkerPodParams(
        run_name="r",
        run_uid="u",
        namespace="ns",
        workflow="wf",
        image="img",
        entrypoint="m:f",
        attempt=1,
        default_retry={"maxAttempts": 4, "initialInterval": "2s"},
    )
    env = {e["name"]: e for e in build_worker_pod(params)["spec"]["containers"][0]["env"]}
    assert json.loads(env["RATLINE_DEFAULT_RETRY"]["value"]) == {
        "initialInterval": "2s",
        "maxAttempts": 4,
    }
