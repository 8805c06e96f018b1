"""RunTtl's handling of WorkflowRun events against fake API calls."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

from ratline.controller.context import Context
from ratline.controller.lifecycle_api import LifecycleApi
from ratline.controller.ttl import RunTtl
from ratline.controller.units import iso, utcnow


class FakeKube:
    def __init__(self, workflow_spec: dict[str, Any] | None) -> None:
        self.workflow_spec = workflow_spec
        self.gets = 0

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return None if self.workflow_spec is None else {"spec": self.workflow_spec}


class FakeApi:
    def __init__(self, wanted: int = 1) -> None:
        self.deleted: list[tuple[str, str | None]] = []
        self.wanted = wanted
        self.done = asyncio.Event()  # set once `wanted` deletions happened

    async def delete_run(self, namespace: str, name: str, uid: str | None = None) -> bool:
        self.deleted.append((name, uid))
        if len(self.deleted) >= self.wanted:
            self.done.set()
        return True


def body(name: str, phase: str, ago_s: float, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"},
        "spec": {"workflowRef": {"name": "wf"}, **spec},
        "status": {"phase": phase, "finishedAt": iso(utcnow() - timedelta(seconds=ago_s))},
    }


def ttl_for(kube: FakeKube, api: FakeApi) -> RunTtl:
    return RunTtl(cast(Context, SimpleNamespace(kube=kube)), cast(LifecycleApi, api))


async def test_an_expired_run_is_deleted_with_its_uid_as_precondition() -> None:
    kube, api = FakeKube(None), FakeApi()
    await ttl_for(kube, api).on_event(
        "MODIFIED", body("r", "Succeeded", 30, ttlSecondsAfterFinished=5)
    )
    await asyncio.wait_for(api.done.wait(), timeout=5)
    assert api.deleted == [("r", "u-r")]
    assert kube.gets == 0  # the run's own TTL: no Workflow lookup


async def test_the_workflow_default_applies_and_is_cached() -> None:
    kube, api = FakeKube({"defaults": {"ttlSecondsAfterFinished": 0}}), FakeApi(wanted=2)
    ttl = ttl_for(kube, api)
    await ttl.on_event("MODIFIED", body("a", "Failed", 1))
    await ttl.on_event("MODIFIED", body("b", "Failed", 1))

    await asyncio.wait_for(api.done.wait(), timeout=5)
    assert sorted(n for n, _ in api.deleted) == ["a", "b"]
    assert kube.gets == 1


async def test_unfinished_untimed_children_and_deleted_runs_are_left_alone() -> None:
    kube, api = FakeKube(None), FakeApi()
    ttl = ttl_for(kube, api)
    await ttl.on_event("MODIFIED", body("live", "Running", 100, ttlSecondsAfterFinished=0))
    await ttl.on_event("MODIFIED", body("keep", "Succeeded", 100))  # no TTL anywhere
    child = body("child", "Succeeded", 100, ttlSecondsAfterFinished=0)
    child["metadata"]["labels"] = {"ratline.dev/parent-uid": "p"}
    await ttl.on_event("MODIFIED", child)  # its parent has not been told yet
    later = body("later", "Succeeded", 0, ttlSecondsAfterFinished=3600)
    await ttl.on_event("MODIFIED", later)
    await ttl.on_event("DELETED", later)  # disarmed
    await asyncio.sleep(0.05)
    assert api.deleted == []
    child["status"]["parentNotified"] = True
    await ttl.on_event("MODIFIED", child)
    await asyncio.wait_for(api.done.wait(), timeout=5)
    assert api.deleted == [("child", "u-child")]
