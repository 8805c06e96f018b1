"""An in-memory `Kube` for the controller's unit tests (the real one is e2e-tested).

Objects are plain dicts, as the API server returns them; status patches are
applied as RFC 7386 merge patches, pods are created and deleted by name, and
every write is recorded in `writes` so a test can stop the "operator" after
any one of them (`crash_after`) and start a fresh one on the same state.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from kubernetes.client.exceptions import ApiException


class Crash(Exception):
    """The operator process dies here; every later write of that process fails too, so a
    handler that catches it cannot write anything more (as a dead process cannot)."""


def apply_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = apply_merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Writes:
    """Counts durable writes (store and API) and crashes after the n-th, if asked."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.crash_after: int | None = None
        self.dead = False  # once crashed, every later write of that process fails too

    def check(self) -> None:
        if self.dead:
            raise Crash("the operator is dead")

    def record(self, what: str) -> None:
        self.log.append(what)
        if self.crash_after is not None and len(self.log) >= self.crash_after:
            self.crash_after = None
            self.dead = True
            raise Crash(what)


class FakeKube:
    """`ratline.controller.kube.Kube` over dicts."""

    def __init__(self, writes: Writes | None = None) -> None:
        self.writes = writes or Writes()
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.workflows: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []  # (run name, reason, message)
        self.fail_next: list[int] = []  # HTTP statuses the next calls fail with
        self._uids = itertools.count(1)

    # test setup
    def add_workflow(self, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "ratline.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": {"image": "img:1", "entrypoint": "mod:wf", **spec},
        }
        self.workflows[(namespace, name)] = body
        return body

    def add_run(self, namespace: str, name: str, workflow: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "ratline.dev/v1alpha1",
            "kind": "WorkflowRun",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{next(self._uids)}",
                "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"workflowRef": {"name": workflow}, **spec},
        }
        self.runs[(namespace, name)] = body
        return body

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise ApiException(status=self.fail_next.pop(0), reason="injected")

    # the protocol
    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail()
        obj = self.runs.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def list_runs(self, namespace: str | None) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (ns, _), o in self.runs.items() if namespace in (None, ns)]

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.workflows.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def patch_run_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        self._maybe_fail()
        obj = self.runs.get((namespace, name))
        if obj is None:
            return None
        self.writes.check()
        obj["status"] = apply_merge_patch(obj.get("status") or {}, status)
        self.writes.record(f"patch status {name}")
        return copy.deepcopy(obj)

    async def patch_workflow_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        obj = self.workflows.get((namespace, name))
        if obj is None:
            return None
        obj["status"] = apply_merge_patch(obj.get("status") or {}, status)
        return copy.deepcopy(obj)

    async def create_run(self, namespace: str, body: dict[str, Any]) -> bool:
        name = body["metadata"]["name"]
        if (namespace, name) in self.runs:
            return False
        self.writes.check()
        obj = copy.deepcopy(body)
        obj["metadata"].update(
            namespace=namespace, uid=f"uid-{next(self._uids)}", generation=1,
            creationTimestamp="2026-01-01T00:00:00Z",
        )  # fmt: skip
        self.runs[(namespace, name)] = obj
        self.writes.record(f"create run {name}")
        return True

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.pods.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        key, _, value = selector.partition("=")
        return [
            copy.deepcopy(p)
            for (ns, _), p in self.pods.items()
            if ns == namespace and p["metadata"]["labels"].get(key) == value
        ]

    async def create_pod(self, namespace: str, body: Any) -> bool:
        name = body["metadata"]["name"]
        if (namespace, name) in self.pods:
            return False
        self.writes.check()
        self.pods[(namespace, name)] = copy.deepcopy(body)
        self.writes.record(f"create pod {name}")
        return True

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int = 10) -> bool:
        if (namespace, name) not in self.pods:
            return False
        self.writes.check()
        del self.pods[(namespace, name)]
        self.writes.record(f"delete pod {name}")
        return True

    async def post_event(
        self, involved: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.events.append((str(involved["name"]), reason, message))

    def close(self) -> None:
        pass

    # what a kubelet would do
    def end_pod(self, namespace: str, name: str, code: int) -> dict[str, Any]:
        """Mark the pod's worker container terminated with `code`; returns the pod."""
        pod = self.pods[(namespace, name)]
        reason = "Completed" if code == 0 else "Error"
        pod["status"] = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {"name": "worker", "state": {"terminated": {"exitCode": code, "reason": reason}}}
            ],
        }
        return copy.deepcopy(pod)
