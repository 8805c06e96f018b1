"""Worker pods as data: the manifest the operator creates, and how one ended.

Pure functions (no I/O) so the contract in docs/architecture.md ("Worker
pods") is unit tested byte for byte; `workers.py` does the API calls.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ratline.protocol import (
    API_VERSION,
    ENV_ATTEMPT,
    ENV_DEFAULT_RETRY,
    ENV_DSN,
    ENV_ENTRYPOINT,
    ENV_IDLE_THRESHOLD,
    ENV_RUN_ID,
    ENV_WORKER_ID,
    LABEL_ATTEMPT,
    LABEL_RUN,
    LABEL_RUN_UID,
    LABEL_WORKFLOW,
    MANAGED_BY,
    RESERVED_ENV,
    ExitCode,
)

CONTAINER = "worker"
RUN_AS_USER = 65532
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class WorkerPodParams:
    """What the pod of one activation of one run is made of."""

    run_name: str
    run_uid: str
    namespace: str
    workflow: str
    image: str
    entrypoint: str
    attempt: int
    dsn_secret: str = "ratline-db"
    dsn_key: str = "dsn"
    idle_threshold: float = 2.0
    command: Sequence[str] = ("python", "-m", "ratline.worker")
    pod_template: Mapping[str, Any] = field(default_factory=dict)
    default_retry: Mapping[str, Any] | None = None  # Workflow.spec.defaults.retry


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars, alphanumeric ends) standing for `value`."""
    cleaned = _LABEL_VALUE_BAD.sub("-", value)
    if len(cleaned) > 63:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[:54]}-{digest}"
    return cleaned.strip("-_.")


def worker_pod_name(run_name: str, run_uid: str, attempt: int) -> str:
    """`<run>-w<attempt>`; long run names are cut and disambiguated by the uid."""
    suffix = f"-w{attempt}"
    name = run_name + suffix
    if len(name) <= 63:
        return name
    head = run_name[: 63 - len(suffix) - 6].rstrip("-.")
    return f"{head}-{run_uid.replace('-', '')[:5]}{suffix}"


def pod_labels(params: WorkerPodParams) -> dict[str, str]:
    return {
        MANAGED_BY: "ratline",
        LABEL_RUN: label_value(params.run_name),
        LABEL_RUN_UID: params.run_uid,
        LABEL_WORKFLOW: label_value(params.workflow),
        LABEL_ATTEMPT: str(params.attempt),
    }


def _env(params: WorkerPodParams) -> list[dict[str, Any]]:
    user_env = [
        dict(item)
        for item in params.pod_template.get("env") or []
        if isinstance(item, Mapping) and item.get("name") not in RESERVED_ENV
    ]
    ours: list[dict[str, Any]] = [
        {"name": ENV_RUN_ID, "value": params.run_uid},
        {"name": ENV_ENTRYPOINT, "value": params.entrypoint},
        {"name": ENV_IDLE_THRESHOLD, "value": f"{params.idle_threshold:g}"},
        {"name": ENV_ATTEMPT, "value": str(params.attempt)},
        {
            "name": ENV_WORKER_ID,
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        },
        {
            "name": ENV_DSN,
            "valueFrom": {"secretKeyRef": {"name": params.dsn_secret, "key": params.dsn_key}},
        },
    ]
    if params.default_retry:
        retry = json.dumps(dict(params.default_retry), sort_keys=True)
        ours.append({"name": ENV_DEFAULT_RETRY, "value": retry})
    return user_env + ours


def build_worker_pod(params: WorkerPodParams) -> dict[str, Any]:
    """The worker pod manifest: restricted, tokenless, owned by its WorkflowRun."""
    template = params.pod_template
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod_security.update(dict(template.get("securityContext") or {}))
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": params.image,
        "command": list(params.command),
        "env": _env(params),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if template.get("envFrom"):
        container["envFrom"] = [dict(item) for item in template["envFrom"]]
    if template.get("resources"):
        container["resources"] = dict(template["resources"])
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": [container],
    }
    for key in ("serviceAccountName", "priorityClassName"):
        if template.get(key):
            spec[key] = template[key]
    for key in ("nodeSelector",):
        if template.get(key):
            spec[key] = dict(template[key])
    for key in ("tolerations", "imagePullSecrets"):
        if template.get(key):
            spec[key] = [dict(item) for item in template[key]]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": worker_pod_name(params.run_name, params.run_uid, params.attempt),
            "namespace": params.namespace,
            "labels": pod_labels(params),
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "WorkflowRun",
                    "name": params.run_name,
                    "uid": params.run_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


class ExitAction(enum.Enum):
    """What the operator does when a worker pod ends (docs/architecture.md)."""

    PROJECT = "project"  # 0: read the store
    INPUT_INVALID = "InputInvalid"  # 65
    ENTRYPOINT_INVALID = "EntrypointInvalid"  # 66
    CONFIG_INVALID = "WorkerConfigInvalid"  # 2
    RETRY = "retry"  # 69, 75, crash, eviction, vanished pod


@dataclass(frozen=True)
class PodExit:
    """How one worker pod ended; `code` is None when no exit code was reported."""

    pod: str
    code: int | None
    reason: str

    @property
    def action(self) -> ExitAction:
        actions: dict[int, ExitAction] = {
            ExitCode.OK: ExitAction.PROJECT,
            ExitCode.INPUT_INVALID: ExitAction.INPUT_INVALID,
            ExitCode.ENTRYPOINT_INVALID: ExitAction.ENTRYPOINT_INVALID,
            ExitCode.USAGE: ExitAction.CONFIG_INVALID,
        }
        return actions.get(self.code if self.code is not None else -1, ExitAction.RETRY)


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER:
            state = status.get("state") or {}
            terminated = state.get("terminated")
            if terminated:
                return dict(terminated)
    return None


def pod_exit(pod: Mapping[str, Any], *, deleted: bool = False) -> PodExit | None:
    """How the pod ended, or None while it still runs (or has not started).

    A pod deleted or evicted before reporting an exit code counts as a crash:
    its worker may have died mid-step, and a replacement replays the history.
    """
    name = str((pod.get("metadata") or {}).get("name", ""))
    status = pod.get("status") or {}
    phase = status.get("phase")
    terminated = _terminated(pod)
    if terminated is not None and terminated.get("exitCode") is not None:
        code = int(terminated["exitCode"])
        reason = str(terminated.get("reason") or ("Completed" if code == 0 else "Error"))
        return PodExit(pod=name, code=code, reason=reason)
    if phase in ("Succeeded", "Failed"):
        reason = str(status.get("reason") or phase)
        return PodExit(pod=name, code=0 if phase == "Succeeded" else None, reason=reason)
    if deleted:
        return PodExit(pod=name, code=None, reason="PodDeleted")
    return None


# Waiting reasons that do not heal by themselves: someone must fix a Secret or an image.
STUCK_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
    }
)


def pod_stuck(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when the worker container cannot start, else None."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != CONTAINER:
            continue
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return str(waiting["reason"]), str(waiting.get("message") or "")
    return None


def backoff_delay(retries: int, initial: float, maximum: float) -> float:
    """Seconds before replacement number `retries` (1-based): initial * 2^(n-1), capped."""
    if retries <= 0:
        return 0.0
    return float(min(maximum, initial * (2 ** min(retries - 1, 30))))
