"""Child runs: the worker records `ChildStarted`, the operator makes it real.

The child is an ordinary WorkflowRun (visible to kubectl) owned by its parent
and labelled `ratline.dev/parent-uid`; the promise to settle rides along as an
annotation. When the child ends, its outcome goes into the parent's inbox as
`child:<command_id>` (signal with the result, reject with the error), exactly
once by the inbox key, and the parent is woken.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.exceptions import ApiException

from ratline.controller.context import Context
from ratline.controller.pods import label_value
from ratline.controller.status import RunKey
from ratline.protocol import ANNOTATION_PROMISE, API_VERSION, LABEL_PARENT, LABEL_PARENT_UID
from ratline.store.base import InboxKind, RunRecord, RunStatus

log = logging.getLogger(__name__)


def child_manifest(parent: RunKey, child: dict[str, Any]) -> dict[str, Any]:
    """The WorkflowRun for one `ChildStarted` event of `parent`."""
    spec: dict[str, Any] = {"workflowRef": {"name": str(child.get("workflow") or "")}}
    if child.get("input") is not None:
        spec["input"] = child["input"]
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "metadata": {
            "name": str(child["name"]),
            "namespace": parent.namespace,
            "labels": {
                LABEL_PARENT_UID: parent.uid,
                LABEL_PARENT: label_value(parent.name),
            },
            "annotations": {ANNOTATION_PROMISE: str(child["promise"])},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "WorkflowRun",
                    "name": parent.name,
                    "uid": parent.uid,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


class Children:
    """Creates requested children and reports finished ones to their parents."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._ensured: set[tuple[str, str]] = set()  # (parent uid, child name) this process

    async def ensure(self, parent: RunKey, children: dict[str, dict[str, Any]]) -> None:
        """Create each requested child once per operator lifetime (409 = exists: fine)."""
        for name, child in children.items():
            if (parent.uid, name) in self._ensured:
                continue
            try:
                created = await self.ctx.kube.create_run(
                    parent.namespace, child_manifest(parent, child)
                )
            except ApiException as exc:
                if exc.status not in (400, 422):
                    raise
                message = f"cannot create child run {name!r}: {exc.reason}"
                await self.ctx.store.deliver(
                    parent.uid,
                    str(child["promise"]),
                    InboxKind.REJECT,
                    {"type": "ChildInvalid", "message": message},
                )
                self.ctx.emit(parent, "ChildInvalid", message, warning=True)
                self.ctx.scheduler.now(parent, "child invalid")
            else:
                if created:
                    self.ctx.emit(parent, "ChildCreated", f"created child run {name}")
            self._ensured.add((parent.uid, name))

    async def notify_parent(self, child: RunKey, record: RunRecord) -> None:
        """Deliver a finished child's outcome to its parent and wake the parent."""
        ctx = self.ctx
        if not record.status.finished or ctx.writer.view(child.uid).get("parentNotified"):
            return
        obj = await ctx.kube.get_run(child.namespace, child.name)
        if obj is None:
            return
        meta = obj["metadata"]
        parent_uid = record.parent_id or (meta.get("labels") or {}).get(LABEL_PARENT_UID)
        promise = (meta.get("annotations") or {}).get(ANNOTATION_PROMISE)
        if not parent_uid or not promise:
            return
        if record.status is RunStatus.SUCCEEDED:
            await ctx.store.deliver(parent_uid, promise, InboxKind.SIGNAL, record.result)
        else:
            error = record.error or {"type": record.status.value, "message": record.status.value}
            await ctx.store.deliver(parent_uid, promise, InboxKind.REJECT, error)
        ctx.writer.set(child.uid, parentNotified=True)
        parent = await ctx.store.get_run(parent_uid)
        if parent is not None:
            ctx.scheduler.now(RunKey(parent.namespace, parent.name, parent.id), "child finished")
