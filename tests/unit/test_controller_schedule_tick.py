"""One schedule tick against fake API calls: what is created, deleted and written to status."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from ratline.controller.context import Context
from ratline.controller.lifecycle_api import LifecycleApi
from ratline.controller.schedule_handlers import ScheduleDaemons

NOW = datetime(2026, 12, 2, 1, 10, 30, tzinfo=UTC)


class FakeKube:
    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.created: list[dict[str, Any]] = []
        self.events: list[str] = []

    async def create_run(self, namespace: str, body: dict[str, Any]) -> bool:
        self.created.append(body)
        name = body["metadata"]["name"]
        if name in self.existing:
            return False
        self.existing.add(name)
        return True

    async def post_event(self, involved: dict[str, Any], reason: str, message: str) -> None:
        self.events.append(reason)


class FakeApi:
    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.deleted: list[str] = []
        self.patches: list[dict[str, Any]] = []

    async def runs_labelled(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert selector == "ratline.dev/schedule=s"
        return self.runs

    async def delete_run(self, namespace: str, name: str, uid: str | None = None) -> bool:
        self.deleted.append(name)
        return True

    async def patch_schedule_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        self.patches.append(status)


def schedule(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "uid": "u-s",
            "generation": 2,
            "creationTimestamp": "2026-12-02T00:00:00Z",
        },
        "spec": {"schedule": "*/5 * * * *", "workflowRef": {"name": "wf"}, **spec},
        "status": status or {},
    }


def run(name: str, phase: str | None, finished: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"u-{name}", "creationTimestamp": "2026-12-02T01:00:00Z"},
        "status": {"phase": phase, **({"finishedAt": finished} if finished else {})},
    }


def daemons(kube: FakeKube, api: FakeApi) -> ScheduleDaemons:
    return ScheduleDaemons(cast(Context, SimpleNamespace(kube=kube)), cast(LifecycleApi, api))


async def test_a_due_firing_creates_its_run_and_records_it() -> None:
    kube, api = FakeKube(set()), FakeApi([])
    decision, wake = await daemons(kube, api).tick(schedule(), NOW)
    assert decision is not None
    assert decision.create == datetime(2026, 12, 2, 1, 10, tzinfo=UTC)
    assert [b["metadata"]["name"] for b in kube.created] == [
        f"s-{int(decision.create.timestamp()) // 60}"
    ]
    status = api.patches[-1]
    assert status["lastScheduleTime"] == "2026-12-02T01:10:00Z"
    assert status["nextScheduleTime"] == "2026-12-02T01:15:00Z"
    assert status["activeCount"] == 1
    assert status["conditions"][0]["reason"] == "Scheduled"
    assert status["observedGeneration"] == 2
    assert wake == NOW + timedelta(seconds=5)  # an active run: look again soon
    await asyncio.sleep(0)  # Events are posted in the background
    assert kube.events == ["RunCreated"]


async def test_a_repeated_firing_hits_the_existing_name_and_counts_as_done() -> None:
    name = f"s-{int(datetime(2026, 12, 2, 1, 10, tzinfo=UTC).timestamp()) // 60}"
    kube, api = FakeKube({name}), FakeApi([])
    await daemons(kube, api).tick(schedule(), NOW)
    assert api.patches[-1]["lastRun"] == name
    await asyncio.sleep(0)
    assert kube.events == []  # nothing new was created


async def test_forbid_skips_and_history_limits_delete() -> None:
    runs = [
        run("old", "Succeeded", "2026-12-02T00:01:00Z"),
        run("newer", "Succeeded", "2026-12-02T00:06:00Z"),
        run("active", "Running"),
    ]
    kube, api = FakeKube(set()), FakeApi(runs)
    sched = schedule(
        {"lastScheduleTime": "2026-12-02T01:05:00Z"},
        concurrencyPolicy="Forbid",
        successfulRunsHistoryLimit=1,
    )
    decision, _ = await daemons(kube, api).tick(sched, NOW)
    assert decision is not None
    assert decision.skipped
    assert kube.created == []
    assert api.deleted == ["old"]
    status = api.patches[-1]
    assert status["conditions"][0]["reason"] == "Skipped"
    assert status["active"] == [{"name": "active", "uid": "u-active"}]
    await asyncio.sleep(0)
    assert kube.events == ["Skipped"]


async def test_an_invalid_spec_sets_ready_false_and_patches_only_on_change() -> None:
    kube, api = FakeKube(set()), FakeApi([])
    made = daemons(kube, api)
    decision, _ = await made.tick(schedule(schedule="61 * * * *"), NOW)
    assert decision is None
    condition = api.patches[-1]["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSchedule")
    # The same status again: no second patch.
    await made.tick(schedule(api.patches[-1], schedule="61 * * * *"), NOW)
    assert len(api.patches) == 1
