"""An early signal does not keep a run awake (issue 8, item 4), on the real control plane.

The approval example waits for `approval`; a signal for `escalation` (a promise it
has not created) arrives first. It must not wake the run: no worker pod starts and
`status.activations` stays where it was for a whole minute (before the fix, every
suspension was due at once and the operator started pods back to back). The early
signal is listed in `status.earlySignals`; the real answer then ends the run.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import Kubectl, OperatorProcess, wait_for
from tests.e2e.test_examples import apply_example

pytestmark = pytest.mark.e2e
QUIET_S = 60.0


@pytest.mark.timeout(300)
def test_an_early_signal_leaves_the_approval_run_asleep(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    name = apply_example(kubectl, "approval")
    kubectl.wait_phase(name, "Suspended", timeout=60)
    wait_for("the worker pod to end", lambda: not kubectl.live_worker_pods(name), timeout=60)
    early = {"approved": True, "by": "lee"}
    kubectl.patch_run(name, {"spec": {"signals": {"escalation": early}}})

    def listed() -> dict[str, Any] | None:
        status = kubectl.status(name)
        return status if "escalation" in (status.get("earlySignals") or []) else None

    status = wait_for("the early signal in status.earlySignals", listed, timeout=60)
    assert [p["name"] for p in status["pendingPromises"]] == ["approval"]
    activations = status.get("activations")
    pods = len(kubectl.worker_pods(name))
    quiet_until = time.monotonic() + QUIET_S
    while time.monotonic() < quiet_until:  # observe a whole minute, however often
        now = kubectl.status(name)
        assert now.get("activations") == activations, now
        assert now["phase"] == "Suspended", now
        assert not kubectl.live_worker_pods(name)
        time.sleep(1.0)
    assert len(kubectl.worker_pods(name)) == pods  # not one pod more

    kubectl.patch_run(name, {"spec": {"signals": {"approval": {"approved": True, "by": "dana"}}}})
    final = kubectl.wait_phase(name, "Succeeded", "Failed", timeout=90)
    assert final["phase"] == "Succeeded", final
    result = json.loads(final["result"])
    assert (result["outcome"], result["decided_by"], result["escalated"]) == (
        "approved",
        "dana",
        False,
    )
    assert final.get("activations") == (activations or 0) + 1
