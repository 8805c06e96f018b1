"""The UI's pages and actions: each authorizes its namespace first, then reads.

Reads of Kubernetes objects (the WorkflowRun, its pods, a label selector) go
through an API client that is the user, so RBAC applies twice over; reads of the
store happen only after a SubjectAccessReview allowed the namespace. Actions are
the CLI's own commands (`actions.py`) behind a `patch` review (plus `create` for
retry, which makes a new WorkflowRun).
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ratline.cli import output, runs
from ratline.store import RunStatus
from ratline.store.queries import Cursor, RunFilter, RunPage, statuses
from ratline.ui import actions, auth, schedules, timeline
from ratline.ui.server import CLIENTS, CONFIG, GATE, QUERIES, TOKEN, USER, redirect, render

_DNS = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
HISTORY_SHOWN = 1000
PREVIEW = 120


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/ns/{ns}/runs", runs_page)
    app.router.add_get("/ns/{ns}/runs/_rows", runs_rows)
    app.router.add_get("/ns/{ns}/runs/{name}", run_page)
    app.router.add_get("/ns/{ns}/runs/{name}/value", run_value)
    app.router.add_post("/ns/{ns}/runs/{name}/{action}", run_action)
    schedules.add_routes(app)


def namespace_of(request: web.Request) -> str:
    """The path's namespace, or 404 for anything that cannot be one."""
    ns = request.match_info["ns"]
    if not _DNS.match(ns) or len(ns) > 63:
        raise web.HTTPNotFound()
    return ns


def _run_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _DNS.match(name):
        raise web.HTTPNotFound()
    return name


def _user_api(request: web.Request) -> client.ApiClient:
    return request.app[CLIENTS].get(request[TOKEN])


def _session(request: web.Request, ns: str) -> actions.UserSession:
    return actions.UserSession(ns, _user_api(request), dsn=request.app[CONFIG].dsn)


# -- start page -----------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    """The configured namespaces the user may list, and a box to type another."""
    wanted = request.query.get("ns", "").strip()
    if wanted:
        if not _DNS.match(wanted):
            raise web.HTTPBadRequest(text="ns: not a namespace name")
        return redirect(f"/ns/{wanted}/runs")
    gate, user = request.app[GATE], request[USER]
    visible = [
        ns for ns in request.app[CONFIG].namespaces if await gate.allows(user, auth.to_see(ns))
    ]
    if len(visible) == 1 and not request.query:
        return redirect(f"/ns/{visible[0]}/runs")
    return render(request, "index.html", namespaces=visible)


# -- the runs list --------------------------------------------------------------------------------


async def _page(request: web.Request, ns: str) -> tuple[RunFilter, RunPage]:
    await request.app[GATE].require(request[USER], auth.to_see(ns))
    q = request.query
    try:
        label = q.get("label", "").strip()
        ids = await _label_ids(request, ns, label) if label else None
        flt = RunFilter(
            namespace=ns,
            statuses=statuses([p for p in q.getall("phase", []) if p]),
            workflow=q.get("workflow") or None,
            text=q.get("q") or None,
            ids=ids,
            after=Cursor.decode(q["after"]) if q.get("after") else None,
            limit=int(q.get("limit", "50")),
        )
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc).split("\n")[0]) from None
    return flt, await request.app[QUERIES].page(flt)


async def _label_ids(request: web.Request, ns: str, selector: str) -> tuple[str, ...]:
    """The uids of the runs a label selector matches, listed as the user."""

    def listing() -> Any:
        api = client.CustomObjectsApi(_user_api(request))
        return api.list_namespaced_custom_object(
            runs.GROUP, runs.VERSION, ns, runs.RUNS, label_selector=selector, _request_timeout=30
        )

    try:
        found = await asyncio.to_thread(listing)
    except ApiException as exc:
        if exc.status in (401, 403):
            raise auth.Denied(403) from None
        raise ValueError(f"label: {runs._api_message(exc)}") from None
    return tuple(str(item["metadata"]["uid"]) for item in found.get("items") or [])


def _rows(page: RunPage, now: datetime) -> list[dict[str, Any]]:
    rows = []
    for row in page.rows:
        run = row.run
        waiting = list(run.waiting_for)
        if run.status is RunStatus.SUSPENDED and run.wake_at and not waiting:
            waiting = [f"timer until {output.iso(run.wake_at)}"]
        rows.append(
            {
                "name": run.name,
                "phase": phase_of(run.status),
                "workflow": run.workflow,
                "progress": f"{row.steps_done}/{row.steps_seen}" if row.steps_seen else "",
                "current": row.current_step or "",
                "waiting": ", ".join(waiting),
                "age": output.duration((now - run.created_at).total_seconds()),
                "created": output.iso(run.created_at),
            }
        )
    return rows


def phase_of(status: RunStatus) -> str:
    """The store's status as the WorkflowRun's phase names it."""
    return {RunStatus.TIMED_OUT: "TimedOut"}.get(status, status.value.capitalize())


async def runs_page(request: web.Request) -> web.StreamResponse:
    ns = namespace_of(request)
    flt, page = await _page(request, ns)
    workflows = await request.app[QUERIES].workflows(ns)
    return render(
        request,
        "runs.html",
        ns=ns,
        rows=_rows(page, datetime.now(UTC)),
        next_url=_next_url(ns, request, page),
        flt=flt,
        label=request.query.get("label", ""),
        phases=[phase_of(s) for s in RunStatus],
        chosen={phase_of(s) for s in flt.statuses},
        workflows=workflows,
        query=_query_without(request, "after"),
    )


def _query_without(request: web.Request, drop: str) -> str:
    return urlencode([(k, v) for k, v in request.query.items() if k != drop])


def _next_url(ns: str, request: web.Request, page: RunPage) -> str:
    if page.next is None:
        return ""
    rest = _query_without(request, "after")
    return f"/ns/{ns}/runs?{rest}{'&' if rest else ''}after={page.next.encode()}"


async def runs_rows(request: web.Request) -> web.StreamResponse:
    """The list's table body alone: what the page's script polls for live updates."""
    ns = namespace_of(request)
    _, page = await _page(request, ns)
    return render(request, "_rows.html", ns=ns, rows=_rows(page, datetime.now(UTC)))


# -- one run --------------------------------------------------------------------------------------


async def _workflow_run(request: web.Request, ns: str, name: str) -> dict[str, Any]:
    """The WorkflowRun as the user sees it; 404 when it does not exist."""
    await request.app[GATE].require(request[USER], auth.to_see(ns, name))
    session = _session(request, ns)
    try:
        return await asyncio.to_thread(session.get_run, name)
    except runs.CliError:
        raise web.HTTPNotFound(text="no such run") from None
    except ApiException as exc:
        if exc.status in (401, 403):
            raise auth.Denied(403) from None
        raise


async def run_page(request: web.Request) -> web.StreamResponse:
    ns, name = namespace_of(request), _run_name(request)
    obj = await _workflow_run(request, ns, name)
    uid = str(obj["metadata"]["uid"])
    queries = request.app[QUERIES]
    record = await queries.run(ns, uid)
    events = await queries.history(ns, uid)
    children = await queries.children(ns, uid)
    now = datetime.now(UTC)
    chart = timeline.build(events, now)
    status = obj.get("status") or {}
    gate, user = request.app[GATE], request[USER]
    may_act = await gate.allows(user, auth.to_act(ns, name))
    may_retry = may_act and all([await gate.allows(user, access) for access in auth.to_retry(ns)])
    return render(
        request,
        "run.html",
        ns=ns,
        name=name,
        obj=obj,
        run_status=status,
        record=record,
        phase=status.get("phase") or (phase_of(record.status) if record else "Pending"),
        svg=timeline.svg(chart, now),
        legend=timeline.COLOURS,
        history=_history(events[-HISTORY_SHOWN:]),
        history_total=len(events),
        state=[(k, _preview(v)) for k, v in sorted((status.get("state") or {}).items())],
        promises=status.get("pendingPromises") or [],
        input_preview=_preview((obj.get("spec") or {}).get("input")),
        result_preview=_preview(record.result) if record and record.result is not None else "",
        error_preview=_preview(record.error) if record and record.error else "",
        pods=await _pods(request, ns, name),
        children=[
            {"name": c.name, "phase": phase_of(c.status), "workflow": c.workflow} for c in children
        ],
        may_act=may_act,
        may_retry=may_retry and bool(request.app[CONFIG].dsn),
        finished=bool(record and record.status.finished),
        notice=request.query.get("notice", ""),
        problem=request.query.get("problem", ""),
    )


def _preview(value: Any) -> str:
    return output.preview(value, PREVIEW) if value is not None else ""


def _history(events: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "seq": e.seq,
            "time": output.iso(e.time),
            "type": e.type.value,
            "cmd": "" if e.command_id is None else e.command_id,
            "name": e.name or "",
            "details": output.event_summary(e),
        }
        for e in events
    ]


async def _pods(request: web.Request, ns: str, name: str) -> list[dict[str, str]] | None:
    """The run's worker pods as the user may list them; None when they may not."""

    def listing() -> Any:
        return client.CoreV1Api(_user_api(request)).list_namespaced_pod(
            ns, label_selector=f"ratline.dev/run={name}", _request_timeout=30
        )

    try:
        pods = await asyncio.to_thread(listing)
    except ApiException as exc:
        if exc.status in (401, 403):
            return None
        raise
    return [
        {
            "name": str(p.metadata.name),
            "phase": str((p.status.phase if p.status else "") or ""),
            "started": output.iso(p.status.start_time if p.status else None),
        }
        for p in pods.items or []
    ]


async def run_value(request: web.Request) -> web.StreamResponse:
    """A full value the page only previews: input, result, error, a state key or an event."""
    ns, name = namespace_of(request), _run_name(request)
    obj = await _workflow_run(request, ns, name)
    uid, what = str(obj["metadata"]["uid"]), request.query.get("what", "")
    queries = request.app[QUERIES]
    value: Any
    if what == "input":
        value = (obj.get("spec") or {}).get("input")
    elif what in ("result", "error"):
        record = await queries.run(ns, uid)
        value = getattr(record, what) if record else None
    elif what == "state":
        value = ((obj.get("status") or {}).get("state") or {}).get(request.query.get("key", ""))
    elif what == "event":
        try:
            seq = int(request.query.get("seq", ""))
        except ValueError:
            raise web.HTTPBadRequest(text="seq: give an event number") from None
        found = [e for e in await queries.history(ns, uid) if e.seq == seq]
        value = found[0].payload if found else None
    else:
        raise web.HTTPBadRequest(text="what: one of input, result, error, state, event")
    body = json.dumps(value, indent=2, sort_keys=True, default=str)
    return web.Response(text=body, content_type="application/json")


# -- actions --------------------------------------------------------------------------------------


async def run_action(request: web.Request) -> web.StreamResponse:
    ns, name = namespace_of(request), _run_name(request)
    action = request.match_info["action"]
    gate, user = request.app[GATE], request[USER]
    needed = [auth.to_act(ns, name)]
    if action == "retry":
        needed += auth.to_retry(ns)
    await gate.require(user, auth.to_see(ns, name), *needed)
    form = await request.post()

    def field(key: str) -> str:
        value = form.get(key)
        return value if isinstance(value, str) else ""

    session = _session(request, ns)
    target = f"/ns/{ns}/runs/{name}"
    try:
        if action == "signal":
            notice = await actions.signal(session, name, field("promise"), field("data") or "true")
        elif action == "reject":
            notice = await actions.reject(session, name, field("promise"), field("error"))
        elif action == "cancel":
            notice = await actions.cancel(session, name)
        elif action == "retry":
            created = await actions.retry(session, name, field("from_step") or None)
            notice = f"workflowrun/{created} created: retries {name}"
            target = f"/ns/{ns}/runs/{created}"
        else:
            raise web.HTTPNotFound()
    except actions.ActionError as exc:
        return redirect(f"{target}?{_query(problem=str(exc))}")
    return redirect(f"{target}?{_query(notice=notice)}")


def _query(**fields: str) -> str:
    return urlencode({k: v[:500] for k, v in fields.items()})
