"""The single writer of WorkflowRun status: layers, conditions, debounced patches.

Two parts of the operator own status fields: the reconciler (pinned image,
worker pod, retries, delivered signals...) and the projection of the store
(phase, steps, progress...). Both write here, never to the API directly, so a
JSON merge patch of one can never clobber the other's fields or conditions.
Patches are coalesced: at most one per run per `interval`, unless a caller
needs its change durable before acting on it (`urgent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kubernetes.client.exceptions import ApiException

from ratline.controller.conditions import SUMMARY_CONDITIONS, condition, with_summary
from ratline.controller.kube import Kube
from ratline.controller.projection import PROJECTED_CONDITIONS, PROJECTED_KEYS, Projection

log = logging.getLogger(__name__)

CONTROLLER_KEYS = (
    "workflow",
    "entrypoint",
    "image",
    "workerPod",
    "activations",
    "retries",
    "lastExit",
    "nextAttemptAt",
    "delivered",
    "parentNotified",
    "observedGeneration",
)
_MANAGED = frozenset(CONTROLLER_KEYS) | frozenset(PROJECTED_KEYS) | {"conditions"}
_MISSING = object()


def merge_patch(
    old: Mapping[str, Any], new: Mapping[str, Any], removable: Collection[str] | None = None
) -> dict[str, Any]:
    """The RFC 7386 merge patch turning `old` into `new` (nested objects diffed, so a
    sub-key that disappeared is removed rather than left behind). Only keys in
    `removable` (all, if None) are deleted at this level."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key, _MISSING)
        if before == value:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    for key in old:
        if key not in new and (removable is None or key in removable):
            patch[key] = None
    return patch


class RunKey(NamedTuple):
    """A WorkflowRun: where it lives and which incarnation (uid) it is."""

    namespace: str
    name: str
    uid: str

    @property
    def involved(self) -> dict[str, str]:
        """The `involvedObject` of Kubernetes Events about this run."""
        return {
            "kind": "WorkflowRun",
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


@dataclass
class _Entry:
    key: RunKey
    published: dict[str, Any]
    ctrl: dict[str, Any] = field(default_factory=dict)
    proj: dict[str, Any] = field(default_factory=dict)
    ctrl_conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    proj_conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)  # as last published
    waiting_override: str | None = None
    version: int = 0
    flushed_version: int = 0
    last_patch: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def dirty(self) -> bool:
        return self.version != self.flushed_version


class StatusWriter:
    """Per-run desired status, merged from both owners and patched with debounce."""

    def __init__(
        self,
        kube: Kube,
        interval: float,
        on_phase: Callable[[str, str | None], None] = lambda uid, phase: None,
    ) -> None:
        self._kube = kube
        self._interval = interval
        self._on_phase = on_phase
        self._entries: dict[str, _Entry] = {}
        self._wakeup = asyncio.Event()

    # reading
    def known(self, uid: str) -> bool:
        return uid in self._entries

    def seed(self, key: RunKey, status: dict[str, Any] | None) -> None:
        """Start from what the object holds (after a restart, or first sight)."""
        if key.uid in self._entries:
            return
        status = copy.deepcopy(status or {})
        entry = _Entry(key=key, published=status)
        entry.ctrl = {k: status[k] for k in CONTROLLER_KEYS if k in status}
        entry.proj = {k: status[k] for k in PROJECTED_KEYS if k in status}
        for cond in status.get("conditions") or []:
            if isinstance(cond, dict) and cond.get("type"):
                if cond["type"] in SUMMARY_CONDITIONS:
                    owner = entry.summary
                elif cond["type"] in PROJECTED_CONDITIONS:
                    owner = entry.proj_conditions
                else:
                    owner = entry.ctrl_conditions
                owner[cond["type"]] = dict(cond)
        self._entries[key.uid] = entry

    def view(self, uid: str) -> dict[str, Any]:
        """The status this run should have (a copy; empty if unknown)."""
        entry = self._entries.get(uid)
        return self._compose(entry) if entry else {}

    def condition(self, uid: str, ctype: str) -> dict[str, Any] | None:
        entry = self._entries.get(uid)
        if entry is None:
            return None
        return entry.ctrl_conditions.get(ctype) or entry.proj_conditions.get(ctype)

    # writing
    def set(self, uid: str, **fields: Any) -> None:
        """Set reconciler-owned fields; None removes one."""
        entry = self._entries[uid]
        for name, value in fields.items():
            if name not in CONTROLLER_KEYS:
                raise KeyError(f"{name} is not a reconciler-owned status field")
            if value is None:
                entry.ctrl.pop(name, None)
            else:
                entry.ctrl[name] = value
        self._touch(entry)

    def set_condition(
        self, uid: str, ctype: str, reason: str, message: str, status: str = "True"
    ) -> None:
        entry = self._entries[uid]
        entry.ctrl_conditions[ctype] = condition(
            entry.ctrl_conditions.get(ctype), ctype, status, reason, message
        )
        self._touch(entry)

    def clear_condition(self, uid: str, *ctypes: str) -> None:
        entry = self._entries[uid]
        if any(entry.ctrl_conditions.pop(ctype, None) is not None for ctype in ctypes):
            self._touch(entry)

    def set_waiting(self, uid: str, text: str | None) -> None:
        """What the reconciler makes the run wait for (a Workflow, a slot, a backoff)."""
        entry = self._entries[uid]
        if entry.waiting_override != text:
            entry.waiting_override = text
            self._touch(entry)

    def set_projection(self, uid: str, projection: Projection) -> None:
        entry = self._entries[uid]
        entry.proj = {k: v for k, v in projection.fields.items() if v is not None}
        conditions = {}
        for ctype, cond in projection.conditions.items():
            conditions[ctype] = condition(
                entry.proj_conditions.get(ctype),
                ctype,
                cond["status"],
                cond["reason"],
                cond["message"],
            )
        entry.proj_conditions = conditions
        self._touch(entry)

    def forget(self, uid: str) -> None:
        self._entries.pop(uid, None)
        self._on_phase(uid, None)

    def _touch(self, entry: _Entry) -> None:
        entry.version += 1
        self._wakeup.set()

    @staticmethod
    def _compose(entry: _Entry) -> dict[str, Any]:
        out: dict[str, Any] = copy.deepcopy(entry.proj)
        out.update(copy.deepcopy(entry.ctrl))
        if entry.waiting_override:
            out["waiting"] = entry.waiting_override
        details = copy.deepcopy({**entry.proj_conditions, **entry.ctrl_conditions})
        generation = entry.ctrl.get("observedGeneration")
        phase = str(out.get("phase") or "Pending")
        out["conditions"] = with_summary(
            phase, details, entry.summary, generation if isinstance(generation, int) else None
        )
        return out

    # flushing
    async def flush(self, uid: str, *, urgent: bool = False) -> None:
        """Patch the difference now (urgent) or once the run's interval has passed."""
        entry = self._entries.get(uid)
        if entry is None:
            return
        async with entry.lock:
            if not entry.dirty:
                return
            if not urgent and time.monotonic() - entry.last_patch < self._interval:
                return
            version = entry.version
            desired = self._compose(entry)
            patch = merge_patch(entry.published, desired, removable=_MANAGED)
            if not patch:
                entry.flushed_version = version
                return
            entry.last_patch = time.monotonic()
            try:
                result = await self._kube.patch_run_status(
                    entry.key.namespace, entry.key.name, patch
                )
            except ApiException as exc:
                if exc.status != 422:
                    raise
                # The schema refused it: retrying the same patch cannot help.
                log.error("status of %s refused (%s): %s", entry.key.name, exc.body, patch)
                entry.flushed_version = version
                return
            if result is None:  # the run is gone
                self.forget(uid)
                return
            entry.published = desired
            entry.summary = {
                c["type"]: c for c in desired["conditions"] if c["type"] in SUMMARY_CONDITIONS
            }
            entry.flushed_version = version
            self._on_phase(uid, desired.get("phase"))

    async def run(self) -> None:
        """Background loop: flush every dirty run once its interval allows."""
        tick = max(0.02, self._interval / 4)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=tick)
            self._wakeup.clear()
            for uid in [u for u, e in self._entries.items() if e.dirty]:
                try:
                    await self.flush(uid)
                except Exception:
                    log.exception("status patch of run %s failed; retrying", uid)
            await asyncio.sleep(tick)
