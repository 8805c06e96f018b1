"""Crashes on either side: a worker pod deleted mid-step, the operator killed mid-run.

Side effects are counted in a shared log: a completed step must never run
again; only the step in flight when a worker died may start twice.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.e2e.conftest import (
    E2E_LOG_ENV,
    Kubectl,
    OperatorProcess,
    run_manifest,
    unique,
    wait_for,
    workflow_manifest,
)
from tests.e2e.workflows.flows import read_effects

pytestmark = pytest.mark.e2e

STEPS = "tests.e2e.workflows.flows:steps"


def counts(effects_log: str, key: str, op: str) -> Counter[int]:
    return Counter(r["step"] for r in read_effects(effects_log, key) if r["op"] == op)


def test_worker_pod_deleted_mid_step_replays_without_repeating_steps(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(workflow_manifest("steps", STEPS, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("victim"), unique("k")
    kubectl.apply(run_manifest(name, "steps", {"key": key, "steps": 4, "step_seconds": 1.5}))
    wait_for("step 2 to start", lambda: counts(effects_log, key, "start")[2] == 1, timeout=60)
    (pod,) = kubectl.live_worker_pods(name)
    kubectl.run("delete", "pod", pod["metadata"]["name"], "--wait=false")

    status = kubectl.wait_phase(name, "Succeeded", timeout=90)
    assert json.loads(status["result"]) == {"total": 10}
    ends = counts(effects_log, key, "end")
    starts = counts(effects_log, key, "start")
    assert ends == {1: 1, 2: 1, 3: 1, 4: 1}  # every step completed exactly once
    assert starts[1] == 1  # completed before the crash: never re-run
    assert starts[2] == 2  # in flight when the pod died: run again by the replacement
    assert status["retries"] == 1
    assert status["activations"] == 2
    assert status["workerPod"] == f"{name}-w2"


def test_operator_restarted_mid_run_finishes_the_run_once(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(workflow_manifest("steps", STEPS, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("steady"), unique("k")
    kubectl.apply(run_manifest(name, "steps", {"key": key, "steps": 4, "step_seconds": 1}))
    wait_for("step 2 to start", lambda: counts(effects_log, key, "start")[2] == 1, timeout=60)
    operator.stop(kill=True)  # SIGKILL: no graceful shutdown
    wait_for("step 3 to start", lambda: counts(effects_log, key, "start")[3] == 1, timeout=30)
    operator.start()

    status = kubectl.wait_phase(name, "Succeeded", timeout=90)
    assert json.loads(status["result"]) == {"total": 10}
    assert counts(effects_log, key, "end") == {1: 1, 2: 1, 3: 1, 4: 1}
    assert counts(effects_log, key, "start") == {1: 1, 2: 1, 3: 1, 4: 1}
    assert status["activations"] == 1  # the worker outlived the operator: no second pod
    assert status.get("retries", 0) == 0
    assert status["progress"] == "4/4"


def test_operator_restart_while_suspended_then_signal(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(
        workflow_manifest("gate", "tests.e2e.workflows.flows:gate", env={E2E_LOG_ENV: effects_log})
    )
    name, key = unique("waiting"), unique("k")
    kubectl.apply(run_manifest(name, "gate", {"key": key}))
    kubectl.wait_phase(name, "Suspended", timeout=60)
    operator.restart(kill=True)
    kubectl.patch_run(name, {"spec": {"signals": {"go": 1}}})
    status = kubectl.wait_phase(name, "Succeeded", timeout=60)
    assert json.loads(status["result"]) == {"outcome": "signalled", "value": 1}
    assert [r["op"] for r in read_effects(effects_log, key)] == ["reserve", "proceed"]
    assert status["activations"] == 2
