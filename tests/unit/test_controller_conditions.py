"""The summary conditions (Ready / Reconciling / Stalled) per phase, and their timestamps."""

from __future__ import annotations

from typing import Any

import pytest

from ratline.controller.conditions import condition, summary, with_summary


def _true(ctype: str, message: str = "why") -> dict[str, Any]:
    return {"type": ctype, "status": "True", "reason": ctype, "message": message}


@pytest.mark.parametrize(
    ("phase", "details", "ready", "reconciling", "stalled", "reason"),
    [
        ("Pending", {}, "False", "True", "False", "Pending"),
        ("Running", {}, "False", "True", "False", "Running"),
        ("Pending", {"WorkflowNotFound": _true("WorkflowNotFound")}, "False", "True", "False",
         "WorkflowNotFound"),
        ("Suspended", {}, "False", "False", "False", "Suspended"),
        ("Succeeded", {}, "True", "False", "False", "Succeeded"),
        ("Cancelled", {}, "True", "False", "False", "Cancelled"),
        ("Failed", {}, "False", "False", "True", "Failed"),
        ("TimedOut", {}, "False", "False", "True", "TimedOut"),
        ("Failed", {"NonDeterministic": _true("NonDeterministic")}, "False", "False", "True",
         "NonDeterministic"),
        ("Failed", {"EntrypointInvalid": _true("EntrypointInvalid")}, "False", "False", "True",
         "EntrypointInvalid"),
        ("Pending", {"InvalidSpec": _true("InvalidSpec")}, "False", "False", "True",
         "InvalidSpec"),
    ],
)  # fmt: skip
def test_summary_per_phase(
    phase: str,
    details: dict[str, dict[str, Any]],
    ready: str,
    reconciling: str,
    stalled: str,
    reason: str,
) -> None:
    out = summary(phase, details)
    assert (out["Ready"][0], out["Reconciling"][0], out["Stalled"][0]) == (
        ready,
        reconciling,
        stalled,
    )
    flagged = [v for v in out.values() if v[0] == "True" and v is not out["Ready"]]
    if flagged:
        assert flagged[0][1] == reason
    if ready == "False":
        assert out["Ready"][1] == phase


def test_transition_time_moves_only_when_status_flips() -> None:
    before = {"type": "Ready", "status": "False", "lastTransitionTime": "2020-01-01T00:00:00Z"}
    same = condition(before, "Ready", "False", "Running", "other message")
    assert same["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    flipped = condition(before, "Ready", "True", "Succeeded", "done")
    assert flipped["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def test_every_condition_carries_the_generation_and_details_are_kept() -> None:
    details = {"Finished": _true("Finished", "completed")}
    out = with_summary("Succeeded", details, {}, 3)
    assert [c["type"] for c in out] == ["Finished", "Ready", "Reconciling", "Stalled"]
    assert {c["observedGeneration"] for c in out} == {3}
    assert next(c for c in out if c["type"] == "Ready")["message"] == "completed"
