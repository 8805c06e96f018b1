"""WorkflowSchedules on the real control plane: firings, names, Forbid, history limits.

Cron has minute resolution, so the firing tests wait for real minute boundaries
(each test at most ~3 minutes); everything that does not need the clock (bad
input, `schedule trigger`) runs without waiting for one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.conftest import (
    E2E_LOG_ENV,
    Kubectl,
    OperatorProcess,
    unique,
    wait_for,
    workflow_manifest,
)
from tests.e2e.test_cli import plugin

# Each test waits for real cron minutes (no clock hook yet): the default 120 s
# timeout covers setup, call and teardown together, which two minutes exceed.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

HELLO = "examples.hello.workflow:hello"
GATE = "tests.e2e.workflows.flows:gate"
LABEL = "ratline.dev/schedule"
MINUTE_WAIT = 150.0  # one cron minute plus a loaded machine's slack


@pytest.fixture
def crds(crds: Kubectl) -> Kubectl:
    """The shared CRDs, plus WorkflowSchedule being served."""
    crds.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/workflowschedules.ratline.dev",
        namespaced=False,
    )
    wait_for(
        "workflowschedules to be served",
        lambda: crds.run("get", "workflowschedules", check=False).returncode == 0,
        timeout=30,
    )
    return crds


@pytest.fixture
def schedules(operator: OperatorProcess, kubectl: Kubectl) -> Any:
    """The operator; schedules are deleted while it still runs (their finalizer)."""
    yield operator
    kubectl.run("delete", "workflowschedules", "--all", "--wait", "--timeout=30s", check=False)


def schedule_manifest(name: str, workflow: str, cron: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ratline.dev/v1alpha1",
        "kind": "WorkflowSchedule",
        "metadata": {"name": name},
        "spec": {"schedule": cron, "workflowRef": {"name": workflow}, **spec},
    }


def runs_of(kubectl: Kubectl, schedule: str) -> list[dict[str, Any]]:
    runs = kubectl.items("workflowruns", "-l", f"{LABEL}={schedule}")
    return sorted(runs, key=lambda r: r["metadata"]["name"])


def scheduled_at(run: dict[str, Any]) -> datetime:
    stamp = run["metadata"]["annotations"]["ratline.dev/scheduled-time"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def expected_name(schedule: str, run: dict[str, Any]) -> str:
    return f"{schedule}-{int(scheduled_at(run).timestamp()) // 60}"


def ready(kubectl: Kubectl, schedule: str) -> dict[str, Any]:
    obj = kubectl.get("workflowschedule", schedule) or {}
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def not_ready(kubectl: Kubectl, schedule: str) -> Any:
    def probe() -> dict[str, Any] | None:
        condition = ready(kubectl, schedule)
        return condition if condition.get("status") == "False" else None

    return probe


def test_every_minute_stable_names_no_duplicates_and_history_limit(
    schedules: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.apply(workflow_manifest("hello", HELLO))
    name = unique("tick")
    kubectl.apply(
        schedule_manifest(
            name,
            "hello",
            "* * * * *",
            input={"name": "${scheduleName}", "times": 1},
            successfulRunsHistoryLimit=1,
            runLabels={"team": "e2e"},
        )
    )
    first = wait_for("the first firing", lambda: runs_of(kubectl, name), MINUTE_WAIT)[0]
    assert first["metadata"]["name"] == expected_name(name, first)
    assert first["metadata"]["labels"]["team"] == "e2e"
    assert first["spec"]["input"] == {"name": name, "times": 1}
    assert scheduled_at(first).second == 0
    status = kubectl.get("workflowschedule", name)["status"]  # type: ignore[index]
    assert status["lastRun"] == first["metadata"]["name"]
    assert datetime.fromisoformat(status["nextScheduleTime"].replace("Z", "+00:00")) > (
        scheduled_at(first)
    )
    kubectl.wait_phase(first["metadata"]["name"], "Succeeded", timeout=90)

    # A killed and restarted operator re-decides the same firing: the name makes it a no-op.
    schedules.restart(kill=True)

    def second() -> dict[str, Any] | None:
        later = [
            r for r in runs_of(kubectl, name) if r["metadata"]["name"] != first["metadata"]["name"]
        ]
        return later[0] if later else None

    newer = wait_for("the next firing", second, MINUTE_WAIT)
    assert newer["metadata"]["name"] == expected_name(name, newer)
    assert scheduled_at(newer) > scheduled_at(first)
    kubectl.wait_phase(newer["metadata"]["name"], "Succeeded", timeout=90)
    # successfulRunsHistoryLimit 1: the older Succeeded run is deleted.
    wait_for(
        "the older run to be pruned",
        lambda: kubectl.get("workflowrun", first["metadata"]["name"]) is None,
        timeout=60,
    )
    names = [r["metadata"]["name"] for r in runs_of(kubectl, name)]
    assert len(names) == len(set(names))
    assert all(
        n == expected_name(name, r) for n, r in zip(names, runs_of(kubectl, name), strict=False)
    )
    assert first["metadata"]["name"] not in names


def test_forbid_skips_while_a_run_is_active(
    schedules: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(workflow_manifest("gate", GATE, env={E2E_LOG_ENV: effects_log}))
    name = unique("forbid")
    kubectl.apply(
        schedule_manifest(
            name, "gate", "* * * * *", input={"key": "${scheduleName}"}, concurrencyPolicy="Forbid"
        )
    )
    first = wait_for("the first firing", lambda: runs_of(kubectl, name), MINUTE_WAIT)[0]
    run = first["metadata"]["name"]
    kubectl.wait_phase(run, "Suspended", timeout=90)
    # The next minute comes while `run` waits for its signal: that firing is held back.
    skipped = wait_for(
        "a firing to be skipped",
        lambda: ready(kubectl, name) if ready(kubectl, name).get("reason") == "Skipped" else None,
        MINUTE_WAIT,
    )
    assert run in skipped["message"]
    assert [r["metadata"]["name"] for r in runs_of(kubectl, name)] == [run]
    obj = kubectl.get("workflowschedule", name) or {}
    assert obj["status"]["activeCount"] == 1
    assert obj["status"]["active"][0]["name"] == run
    events = kubectl.run("get", "events", "--field-selector", f"involvedObject.name={name}")
    assert "Skipped" in events.stdout

    kubectl.patch_run(run, {"spec": {"signals": {"go": True}}})
    kubectl.wait_phase(run, "Succeeded", timeout=90)
    # No starting deadline: the held firing starts once the active run is done.
    later = wait_for(
        "the held firing to start",
        lambda: [r for r in runs_of(kubectl, name) if r["metadata"]["name"] != run],
        60,
    )
    assert scheduled_at(later[0]) > scheduled_at(first)


def test_bad_specs_are_refused_or_flagged_and_trigger_fires_now(
    schedules: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.apply(workflow_manifest("hello", HELLO))
    refused: dict[str, dict[str, Any]] = {
        "spec.schedule": {"schedule": "every minute"},
        "spec.timeZone": {"schedule": "* * * * *", "timeZone": "../etc/passwd"},
        "spec.startingDeadlineSeconds": {"schedule": "* * * * *", "startingDeadlineSeconds": -5},
        "spec.successfulRunsHistoryLimit": {
            "schedule": "* * * * *",
            "successfulRunsHistoryLimit": -1,
        },
        "spec.concurrencyPolicy": {"schedule": "* * * * *", "concurrencyPolicy": "Sometimes"},
    }
    for field, spec in refused.items():
        cron = spec.pop("schedule")
        done = kubectl.create(schedule_manifest(unique("bad"), "hello", cron, **spec), check=False)
        assert done.returncode != 0, field
        assert field in done.stderr, done.stderr
    long_name = "x" * 51
    done = kubectl.create(schedule_manifest(long_name, "hello", "* * * * *"), check=False)
    assert "at most 50 characters" in done.stderr

    flagged = {
        "61 * * * *": ("UTC", "InvalidSchedule"),
        "* * * * *": ("Mars/Olympus", "UnknownTimeZone"),
    }
    for cron, (zone, reason) in flagged.items():
        name = unique("flag")
        kubectl.create(schedule_manifest(name, "hello", cron, timeZone=zone))
        condition = wait_for(f"Ready=False {reason}", not_ready(kubectl, name), timeout=60)
        assert condition["reason"] == reason

    name = unique("manual")
    kubectl.create(
        schedule_manifest(name, "hello", "0 0 1 1 *", suspend=True, input={"name": "m", "times": 1})
    )
    wait_for("Suspended", lambda: ready(kubectl, name).get("reason") == "Suspended", timeout=60)
    before = int(datetime.now(UTC).timestamp())
    done = plugin(kubectl, "schedule", "trigger", name)
    created = done.stdout.strip().removeprefix("workflowrun/").removesuffix(" created")
    assert created.startswith(f"{name}-m")
    assert int(created.removeprefix(f"{name}-m")) >= before
    status = kubectl.wait_phase(created, "Succeeded", timeout=90)
    assert json.loads(status["result"])["greeting"] == "Hello, M!"
    run = kubectl.get("workflowrun", created) or {}
    assert run["metadata"]["labels"][LABEL] == name
    assert run["metadata"]["annotations"]["ratline.dev/triggered-by"].startswith("ratline-cli")
    missing = plugin(kubectl, "schedule", "trigger", "no-such-schedule", check=False)
    assert missing.returncode == 1
    assert "not found" in missing.stderr
