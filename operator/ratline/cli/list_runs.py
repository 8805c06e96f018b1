"""`ratline list`: runs from the store, including those whose WorkflowRun is gone.

The store keeps a run's row after its WorkflowRun is deleted (TTL, history
limits, by hand), so this lists from the store, newest first, page by page
(keyset cursors of `store.queries`), with filters for namespace, workflow,
phase and creation time. Namespaces stay isolated: a namespace is read only if
a SelfSubjectAccessReview says the kubeconfig's user may `list` WorkflowRuns
there, never everything the DSN could read. `-A` means every namespace in the
store that passes that check.

Exit codes: 0 listed, 1 the operation failed or a namespace was refused, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kubernetes import client

from ratline.cli import output
from ratline.cli.runs import TIMEOUT, CliError, Session, _guard
from ratline.controller.lifecycle_api import GROUP, RUNS, VERSION
from ratline.sdk.durations import parse_duration
from ratline.store import RunStatus, open_store

if TYPE_CHECKING:  # the store's Postgres modules load asyncpg: only when a command runs
    from ratline.store.postgres import PostgresStore
    from ratline.store.queries import Cursor, RunRow

HEADERS = ("namespace", "name", "workflow", "phase", "progress", "created", "finished")
WIDE = (*HEADERS, "step", "uid", "started", "cr")


def register(subparsers: Any) -> None:
    """Add `list`."""
    parser = subparsers.add_parser(
        "list", help="runs in the store, also those whose WorkflowRun is gone", description=__doc__
    )
    add = parser.add_argument
    add("-n", "--namespace", action="append", dest="namespaces", help="namespace (repeatable)")
    add("-A", "--all-namespaces", action="store_true", help="every namespace you may list")
    add("--workflow", help="only runs of this Workflow")
    add(
        "-l",
        "--selector",
        help="label selector; matches existing WorkflowRuns only (a deleted run's labels are gone)",
    )
    add("--phase", action="append", default=[], help="only runs in this phase (repeatable)")
    add("--since", help="created at or after: an RFC 3339 time or an age like 2h, 7d")
    add("--until", help="created before: an RFC 3339 time or an age like 30m")
    add("--limit", type=int, default=50, help="runs per page (1-200)")
    add("--after", help="the page cursor a previous page printed")
    add("-o", "--output", choices=("table", "wide", "json", "yaml"), default="table")
    add("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    add("--context", help="kubeconfig context (default: the current one)")
    add("--dsn", default=os.environ.get("RATLINE_DSN"), help="store DSN (default: $RATLINE_DSN)")
    add("--dsn-secret", default="ratline-db", help="Secret holding the DSN (default namespace)")
    add("--dsn-key", default="dsn", help="key of the DSN in that Secret")
    parser.set_defaults(func=lambda args: _guard(cmd_list, _session_namespace(args)))


def _session_namespace(args: argparse.Namespace) -> argparse.Namespace:
    """The Session's namespace (where the DSN Secret is read): the first -n, if any."""
    args.namespace = (args.namespaces or [None])[0]
    return args


# -- pure parts ------------------------------------------------------------------------------------


def parse_time(text: str | None, field: str, now: datetime) -> datetime | None:
    """An RFC 3339 time, or an age (`2h`) counted back from `now`; ValueError names it."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return now - parse_duration(text)
        except ValueError:
            raise ValueError(f"{field}: {text!r} is neither an RFC 3339 time nor an age") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def start_cursor(after: Cursor | None, until: datetime | None) -> Cursor | None:
    """The tighter of the page cursor and `--until` (rows strictly older than both)."""
    from ratline.store.queries import Cursor

    bound = Cursor(created_at=until, id="") if until is not None else None
    if after is None or bound is None:
        return after or bound
    return min(after, bound, key=lambda c: (c.created_at, c.id))


@dataclass(frozen=True)
class Page:
    rows: tuple[RunRow, ...]
    next: Cursor | None


def merge_pages(pages: Iterable[tuple[Sequence[RunRow], bool]], limit: int, since: Any) -> Page:
    """Namespaces' pages (rows, has more) -> one newest-first page of at most `limit`."""
    from ratline.store.queries import Cursor

    rows: list[RunRow] = []
    more = False
    for page_rows, page_more in pages:
        rows.extend(page_rows)
        more = more or page_more
    rows.sort(key=lambda r: (r.run.created_at, r.run.id), reverse=True)
    if since is not None:
        kept = [r for r in rows if r.run.created_at >= since]
        more = more and len(kept) == len(rows)  # past `since`: nothing older is wanted
        rows = kept
    if len(rows) > limit:
        rows, more = rows[:limit], True
    last = rows[-1].run if rows and more else None
    cursor = Cursor(created_at=last.created_at, id=last.id) if last else None
    return Page(rows=tuple(rows), next=cursor)


def phase(status: RunStatus) -> str:
    """The store's status as the CRD spells the phase (timed_out -> TimedOut)."""
    return "".join(part.capitalize() for part in status.value.split("_"))


def row_data(row: RunRow, present: set[str] | None) -> dict[str, Any]:
    run = row.run
    data: dict[str, Any] = {
        "namespace": run.namespace,
        "name": run.name,
        "uid": run.id,
        "workflow": run.workflow,
        "phase": phase(run.status),
        "progress": f"{row.steps_done}/{row.steps_seen}",
        "currentStep": row.current_step,
        "createdAt": output.iso(run.created_at),
        "startedAt": output.iso(run.started_at),
        "finishedAt": output.iso(run.finished_at),
    }
    if present is not None:
        data["workflowRun"] = "present" if run.id in present else "gone"
    return data


def table_rows(page: Page, wide: bool, present: set[str] | None) -> list[list[Any]]:
    out = []
    for row in page.rows:
        d = row_data(row, present)
        cells = [d["namespace"], d["name"], d["workflow"], d["phase"], d["progress"]]
        cells += [d["createdAt"], d["finishedAt"]]
        if wide:
            cells += [d["currentStep"] or "", d["uid"], d["startedAt"], d.get("workflowRun", "")]
        out.append(cells)
    return out


# -- I/O ---------------------------------------------------------------------------------------


def may_list(session: Session, namespace: str) -> bool:
    """SelfSubjectAccessReview: may this kubeconfig list WorkflowRuns in `namespace`
    ("" = in every namespace)?"""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                group=GROUP, resource=RUNS, verb="list", namespace=namespace or None
            )
        )
    )
    result = client.AuthorizationV1Api(session.api).create_self_subject_access_review(
        review, _request_timeout=TIMEOUT
    )
    return bool(result.status is not None and result.status.allowed)


def present_uids(session: Session, namespace: str, selector: str | None = None) -> set[str]:
    """Uids of the WorkflowRuns that still exist in `namespace` (matching `selector`)."""
    custom: Any = client.CustomObjectsApi(session.api)
    listing = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, RUNS, label_selector=selector or "", _request_timeout=TIMEOUT
    )
    return {str(item["metadata"]["uid"]) for item in listing.get("items") or []}


def cmd_list(args: argparse.Namespace, session: Session) -> int:
    from ratline.store.postgres import PostgresStore
    from ratline.store.queries import MAX_PAGE, Cursor, RunFilter, RunQueries, statuses

    now = datetime.now(UTC)
    since = parse_time(args.since, "--since", now)
    until = parse_time(args.until, "--until", now)
    if not 1 <= args.limit <= MAX_PAGE:
        raise ValueError(f"--limit must be between 1 and {MAX_PAGE}")
    wanted = statuses(args.phase)
    after = start_cursor(Cursor.decode(args.after) if args.after else None, until)
    dsn = session.dsn()
    wide = args.output != "table"

    async def work() -> tuple[list[str], Page]:
        store = await open_store(dsn)
        try:
            if not isinstance(store, PostgresStore):
                raise CliError("ratline list needs a postgresql:// store DSN")
            namespaces = await allowed_namespaces(args, session, store)
            queries = RunQueries(store)
            pages = []
            for namespace in namespaces:
                ids = None
                if args.selector:
                    matched = present_uids(session, namespace, args.selector)
                    ids = tuple(sorted(matched))
                flt = RunFilter(
                    namespace=namespace,
                    statuses=wanted,
                    workflow=args.workflow,
                    ids=ids,
                    after=after,
                    limit=args.limit,
                )
                got = await queries.page(flt)
                pages.append((got.rows, got.next is not None))
            return namespaces, merge_pages(pages, args.limit, since)
        finally:
            await store.close()

    namespaces, page = asyncio.run(work())
    present: set[str] | None = None
    if wide:
        present = set()
        for namespace in sorted({r.run.namespace for r in page.rows}):
            present |= present_uids(session, namespace)
    if args.output in ("json", "yaml"):
        data = {
            "namespaces": namespaces,
            "items": [row_data(r, present) for r in page.rows],
            "next": page.next.encode() if page.next else None,
        }
        print(output.dump(data, args.output))
        return 0
    if not page.rows:
        print(f"no runs in {', '.join(namespaces) or 'any namespace you may list'}")
    else:
        headers = WIDE if args.output == "wide" else HEADERS
        print(output.table(headers, table_rows(page, args.output == "wide", present)))
    if page.next:
        print(f"more: --after {page.next.encode()}", file=sys.stderr)
    return 0


async def allowed_namespaces(
    args: argparse.Namespace, session: Session, store: PostgresStore
) -> list[str]:
    """The namespaces to read: asked for (each must be allowed) or, with -A, every
    namespace in the store the user may list WorkflowRuns in."""
    from ratline.store.run_namespaces import run_namespaces

    if args.all_namespaces:
        known = await run_namespaces(store)
        if await asyncio.to_thread(may_list, session, ""):
            return known
        checks = await asyncio.gather(*(asyncio.to_thread(may_list, session, n) for n in known))
        return [n for n, ok in zip(known, checks, strict=True) if ok]
    asked = list(dict.fromkeys(args.namespaces or [session.namespace]))
    for namespace in asked:
        if not await asyncio.to_thread(may_list, session, namespace):
            raise CliError(f"you may not list workflowruns in namespace {namespace!r}")
    return asked


def stored_run(session: Session, name: str) -> dict[str, Any] | None:
    """A WorkflowRun-shaped stand-in, from the store, for a run named `name` whose
    WorkflowRun is gone (the newest such run); None if the store has none. Used by
    `history` and `describe`; allowed only where the user may list WorkflowRuns."""
    from ratline.store.postgres import PostgresStore
    from ratline.store.queries import MAX_PAGE, RunFilter, RunQueries

    if not may_list(session, session.namespace):
        return None

    async def find() -> RunRow | None:
        store = await open_store(session.dsn())
        try:
            if not isinstance(store, PostgresStore):
                return None
            flt = RunFilter(namespace=session.namespace, text=name, limit=MAX_PAGE)
            while True:
                page = await RunQueries(store).page(flt)
                exact = [r for r in page.rows if r.run.name == name]
                if exact or page.next is None:
                    return exact[0] if exact else None
                flt = flt.model_copy(update={"after": page.next})
        finally:
            await store.close()

    found = asyncio.run(find())
    if found is None:
        return None
    run = found.run
    return {
        "metadata": {"name": run.name, "namespace": run.namespace, "uid": run.id},
        "spec": {"workflowRef": {"name": run.workflow}},
        "status": {
            "phase": phase(run.status),
            "progress": f"{found.steps_done}/{found.steps_seen}",
            "conditions": [
                {
                    "type": "WorkflowRunDeleted",
                    "status": "True",
                    "reason": "OnlyInStore",
                    "message": "the WorkflowRun is gone; this is the store's record",
                }
            ],
        },
    }
