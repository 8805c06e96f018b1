"""A Workflow's own status: `Ready` once its spec is accepted, False when runs cannot start.

The Workflow watch calls `accepted` for every change; the exit handler and
the stuck-pod check call `unusable` when a run of the Workflow's current image
and entrypoint cannot start, so `kubectl get wf -o yaml` (and a GitOps health
check) shows why. The condition goes back to Accepted when the spec changes.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.exceptions import ApiException

from ratline.controller.conditions import condition
from ratline.controller.kube import Kube

log = logging.getLogger(__name__)


def _ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def accepted_patch(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The status patch marking the current generation accepted; None if it is already."""
    generation = (obj.get("metadata") or {}).get("generation")
    ready = _ready(obj)
    status = obj.get("status") or {}
    if (
        ready is not None
        and ready.get("observedGeneration") == generation
        and status.get("observedGeneration") == generation
    ):
        return None  # this spec was seen (Accepted, or marked unusable since)
    spec = obj.get("spec") or {}
    message = f"runs use image {spec.get('image')} and entrypoint {spec.get('entrypoint')}"
    cond = condition(ready, "Ready", "True", "Accepted", message)
    if generation is not None:
        cond["observedGeneration"] = generation
    return {"observedGeneration": generation, "conditions": [cond]}


def unusable_patch(
    obj: dict[str, Any], image: str, entrypoint: str, reason: str, message: str
) -> dict[str, Any] | None:
    """Ready=False for the current spec, if the run that failed used that spec."""
    spec = obj.get("spec") or {}
    if spec.get("image") != image or spec.get("entrypoint") != entrypoint:
        return None  # the Workflow changed since the run pinned it: not its fault now
    ready = _ready(obj)
    if ready is not None and (ready.get("status"), ready.get("reason")) == ("False", reason):
        return None
    cond = condition(ready, "Ready", "False", reason, message)
    generation = (obj.get("metadata") or {}).get("generation")
    if generation is not None:
        cond["observedGeneration"] = generation
    return {"conditions": [cond]}


async def mark_unusable(
    kube: Kube,
    namespace: str,
    workflow: str,
    pinned: tuple[str, str],
    reason: str,
    message: str,
) -> None:
    """Best effort: a Workflow status that cannot be written never blocks its runs."""
    try:
        obj = await kube.get_workflow(namespace, workflow)
        patch = unusable_patch(obj, pinned[0], pinned[1], reason, message) if obj else None
        if patch is not None:
            await kube.patch_workflow_status(namespace, workflow, patch)
    except ApiException as exc:
        log.warning("cannot update status of Workflow %s/%s: %s", namespace, workflow, exc)
