"""The summary conditions GitOps tools read: Ready, Reconciling, Stalled.

kstatus (Flux without `healthCheckExprs`, kpt, Config Sync) reads
`Reconciling=True` as InProgress and `Stalled=True` as Failed; `kubectl wait
--for=condition=Ready` and most dashboards read `Ready`. They are derived from
the composed status (phase plus the detail conditions) by one pure function,
so whatever order a pod exit and a store notification arrive in, the same
status yields the same summary. `lastTransitionTime` moves only when a
condition's `status` flips.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ratline.controller.units import iso, utcnow

SUMMARY_CONDITIONS = ("Ready", "Reconciling", "Stalled")
MESSAGE_CHARS = 2000
# Detail conditions that mean "this will not heal without a change by someone".
STALLING = (
    "NonDeterministic",
    "InvalidSpec",
    "InputInvalid",
    "EntrypointInvalid",
    "WorkerConfigInvalid",
    "RetriesExhausted",
)
# Detail conditions that explain why a live run is not advancing yet.
WAITING = ("WorkflowNotFound", "WorkerPending", "Queued", "StoreUnavailable", "ReconcileError")
_DONE_OK = frozenset({"Succeeded", "Cancelled"})
_DONE_BAD = frozenset({"Failed", "TimedOut"})


def condition(
    previous: Mapping[str, Any] | None, ctype: str, status: str, reason: str, message: str
) -> dict[str, Any]:
    """A condition of `ctype`; keeps `previous`'s lastTransitionTime unless status flips."""
    since = (previous or {}).get("lastTransitionTime")
    if previous is None or previous.get("status") != status or not since:
        since = iso(utcnow())
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:MESSAGE_CHARS],
        "lastTransitionTime": since,
    }


def _true(conditions: Mapping[str, Mapping[str, Any]], ctype: str) -> Mapping[str, Any] | None:
    cond = conditions.get(ctype)
    return cond if cond is not None and cond.get("status") == "True" else None


def summary(
    phase: str, details: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[str, str, str]]:
    """type -> (status, reason, message) of the three summary conditions.

    Ready: True for Succeeded and Cancelled (the state asked for), else False with
    the phase as reason. Reconciling: True while Pending or Running. Stalled: True
    for Failed, TimedOut, a blocked (non-deterministic) run and a spec that cannot run.
    """
    stalled = next((c for t in STALLING if (c := _true(details, t)) is not None), None)
    waiting = next((c for t in WAITING if (c := _true(details, t)) is not None), None)
    finished = details.get("Finished") or {}
    if phase in _DONE_OK:
        text = str(finished.get("message") or phase.lower())
        return {
            "Ready": ("True", phase, text),
            "Reconciling": ("False", phase, f"the run is {phase.lower()}"),
            "Stalled": ("False", phase, f"the run is {phase.lower()}"),
        }
    if phase in _DONE_BAD or stalled is not None:
        reason = str(stalled["type"]) if stalled is not None else phase
        text = str((stalled or finished).get("message") or phase)
        return {
            "Ready": ("False", phase, text),
            "Reconciling": ("False", reason, "nothing more happens until someone acts"),
            "Stalled": ("True", reason, text),
        }
    if phase == "Suspended":
        text = "waiting durably (a timer or a signal); no worker runs"
        return {
            "Ready": ("False", phase, text),
            "Reconciling": ("False", phase, text),
            "Stalled": ("False", phase, text),
        }
    reason = str(waiting["type"]) if waiting is not None else phase
    text = str(waiting.get("message")) if waiting is not None else f"the run is {phase.lower()}"
    return {
        "Ready": ("False", phase, text),
        "Reconciling": ("True", reason, text),
        "Stalled": ("False", phase, text),
    }


def with_summary(
    phase: str,
    details: Mapping[str, Mapping[str, Any]],
    previous: Mapping[str, Mapping[str, Any]],
    generation: int | None,
) -> list[dict[str, Any]]:
    """All conditions sorted by type: the details plus the summary, each stamped with
    the generation they were computed for."""
    out = {ctype: dict(cond) for ctype, cond in details.items()}
    for ctype, (status, reason, message) in summary(phase, details).items():
        out[ctype] = condition(previous.get(ctype), ctype, status, reason, message)
    if generation is not None:
        for cond in out.values():
            cond["observedGeneration"] = generation
    return [out[ctype] for ctype in sorted(out)]
