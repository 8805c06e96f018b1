"""The API calls of schedules and TTL that the operator's `Kube` facade lacks.

Listing a schedule's runs by label, deleting a run (optionally only if its uid
still matches) and patching a WorkflowSchedule's status. It owns its client,
made on first use from the same credentials (`load_api_client`), so these
modules depend on nothing but the Kubernetes API; the sync client runs in
threads. 404 on delete or patch means "gone already" and is not an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ratline.controller.kube import load_api_client
from ratline.protocol import GROUP, LABEL_PARENT_UID, RUNS, VERSION

# The API names schedules, TTL and `ratline list` use, imported from here only.
__all__ = ["GROUP", "LABEL_PARENT_UID", "RUNS", "SCHEDULES", "VERSION", "LifecycleApi"]
SCHEDULES = "workflowschedules"
MERGE = "application/merge-patch+json"
TIMEOUT = 30


class LifecycleApi:
    """Async calls over a lazily made `CustomObjectsApi`."""

    def __init__(self, factory: Callable[[], client.ApiClient] = load_api_client) -> None:
        self._factory = factory
        self._custom: Any = None

    @property
    def custom(self) -> Any:
        if self._custom is None:
            self._custom = client.CustomObjectsApi(self._factory())
        return self._custom

    async def runs_labelled(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        custom = self.custom
        data: Any = await asyncio.to_thread(
            lambda: custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, RUNS, label_selector=selector,
                _request_timeout=TIMEOUT,
            )
        )  # fmt: skip
        items: list[dict[str, Any]] = data.get("items") or []
        return items

    async def delete_run(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete a WorkflowRun (only if its uid is `uid`, when given); False if it is gone
        or, with `uid`, was replaced by another run of that name (409)."""
        custom = self.custom
        body: Any = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await asyncio.to_thread(
                lambda: custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, RUNS, name, body=body, _request_timeout=TIMEOUT
                )
            )
        except ApiException as exc:
            if exc.status == 404 or (uid and exc.status == 409):
                return False
            raise
        return True

    async def patch_schedule_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        custom = self.custom
        try:
            await asyncio.to_thread(
                lambda: custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, SCHEDULES, name, {"status": status},
                    _request_timeout=TIMEOUT, _content_type=MERGE,
                )
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise
