"""The schedules page: a namespace's WorkflowSchedules, read with the user's own token.

WorkflowSchedule is a newer CRD than the UI's other pages; where it is not installed
the page says so instead of failing. Authorized like the runs list (`list` of
`workflowschedules` in the namespace); nothing here touches the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ratline.cli import runs
from ratline.ui import auth
from ratline.ui.server import CLIENTS, GATE, TOKEN, USER, render

RESOURCE = "workflowschedules"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ns/{ns}/schedules", schedules_page)


def schedule_rows(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table rows from WorkflowSchedule objects; missing fields show empty."""
    rows = []
    for item in items:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        rows.append(
            {
                "name": str((item.get("metadata") or {}).get("name", "")),
                "schedule": str(spec.get("schedule", "")),
                "time_zone": str(spec.get("timeZone", "") or "UTC"),
                "workflow": str((spec.get("workflowRef") or {}).get("name", "")),
                "suspended": bool(spec.get("suspend")),
                "last": str(status.get("lastScheduleTime", "") or ""),
                "next": str(status.get("nextScheduleTime", "") or ""),
                "last_run": str(status.get("lastRun", "") or ""),
                "active": int(status.get("activeCount") or len(status.get("active") or [])),
            }
        )
    return sorted(rows, key=lambda r: r["name"])


async def schedules_page(request: web.Request) -> web.StreamResponse:
    from ratline.ui.views import namespace_of

    ns = namespace_of(request)
    await request.app[GATE].require(request[USER], auth.Access("list", ns, resource=RESOURCE))
    api = request.app[CLIENTS].get(request[TOKEN])

    def listing() -> Any:
        return client.CustomObjectsApi(api).list_namespaced_custom_object(
            runs.GROUP, runs.VERSION, ns, RESOURCE, _request_timeout=30
        )

    installed = True
    items: list[Any] = []
    try:
        items = (await asyncio.to_thread(listing)).get("items") or []
    except ApiException as exc:
        if exc.status == 404:
            installed = False
        elif exc.status in (401, 403):
            raise auth.Denied(403) from None
        else:
            raise
    return render(request, "schedules.html", ns=ns, installed=installed, rows=schedule_rows(items))
