"""Read-only queries for the web UI (`ratline.ui`): a namespace's runs, page by page.

The UI lists runs newest first with optional filters and must stay fast with many
thousands of runs, so pages are keyset-paginated on `(created_at, id)` and served
by the indexes of migration 0004 (never OFFSET, which reads every skipped row).
Each listed run also carries its step progress and current step, computed from
its history in the same statement. Nothing here writes; callers authorize the
namespace before asking (see `ratline.ui.auth`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ratline.store.base import Event, RunRecord, RunStatus
from ratline.store.postgres import Conn, PostgresStore, _run_record

_FROZEN = ConfigDict(frozen=True, extra="forbid")
MAX_PAGE = 200
END = datetime(9999, 12, 31, tzinfo=UTC)  # later than any run

# Per listed run, two lateral lookups on the events primary key: step progress and the
# latest step. Shared by the keyset page and the OFFSET baseline (constant SQL only).
_PROGRESS = """
SELECT r.*, p.done, p.seen, c.current
  FROM ({runs}) r
  LEFT JOIN LATERAL (
    SELECT count(DISTINCT command_id) FILTER (WHERE type = 'StepCompleted') AS done,
           count(DISTINCT command_id) AS seen
      FROM events e
     WHERE e.run_id = r.id AND e.type IN ('StepStarted', 'StepCompleted', 'StepFailed')
  ) p ON true
  LEFT JOIN LATERAL (
    SELECT e.name AS current FROM events e
     WHERE e.run_id = r.id AND e.type IN ('StepStarted', 'StepCompleted', 'StepFailed')
     ORDER BY e.seq DESC LIMIT 1
  ) c ON true
 ORDER BY r.created_at DESC, r.id DESC
"""
# The page: index-ordered and keyset-bounded; $-parameters only, a NULL filter is off.
# The keyset bound is always there (the first page passes END, after every row), so
# even a generic plan of this prepared statement keeps it as an index condition.
PAGE = _PROGRESS.format(
    runs="""
    SELECT * FROM runs
     WHERE namespace = $1
       AND ($2::text[] IS NULL OR status = ANY ($2::text[]))
       AND ($3::text IS NULL OR workflow = $3::text)
       AND ($4::text IS NULL OR strpos(lower(name), lower($4::text)) > 0
                             OR strpos(lower(workflow), lower($4::text)) > 0)
       AND ($5::text[] IS NULL OR id = ANY ($5::text[]))
       AND (created_at, id) < ($6::timestamptz, $7::text)
     ORDER BY created_at DESC, id DESC
     LIMIT $8"""
)
# The same page the naive way, kept for bench/ui.py's baseline: OFFSET pagination reads
# and discards every skipped row.
OFFSET_PAGE = _PROGRESS.format(
    runs="""
    SELECT * FROM runs WHERE namespace = $1 ORDER BY created_at DESC, id DESC
     LIMIT $2 OFFSET $3"""
)
_IN_NAMESPACE = "SELECT * FROM runs WHERE id = $1 AND namespace = $2"
_CHILDREN = (
    "SELECT * FROM runs WHERE parent_id = $1 AND namespace = $2 ORDER BY created_at, id LIMIT $3"
)
# Distinct workflow names by a loose index scan (one index probe per name, on
# runs_ui_ns_workflow_idx) instead of reading every run of the namespace.
WORKFLOWS = """
WITH RECURSIVE w AS (
    (SELECT workflow FROM runs WHERE namespace = $1 ORDER BY workflow LIMIT 1)
    UNION ALL
    SELECT (SELECT r.workflow FROM runs r
             WHERE r.namespace = $1 AND r.workflow > w.workflow
             ORDER BY r.workflow LIMIT 1)
      FROM w WHERE w.workflow IS NOT NULL
)
SELECT workflow FROM w WHERE workflow IS NOT NULL LIMIT 200
"""


class Cursor(BaseModel):
    """Where the next page starts: the last row's sort key (opaque to the browser)."""

    model_config = _FROZEN
    created_at: datetime
    id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(self.model_dump_json().encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raises ValueError (naming `after`) on anything this class did not encode."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return cls.model_validate_json(raw)
        except ValueError as exc:
            raise ValueError(f"after: not a page cursor ({exc.__class__.__name__})") from None


class RunFilter(BaseModel):
    """What the runs list asks for; every filter is optional."""

    model_config = _FROZEN
    namespace: str = Field(min_length=1, max_length=253)
    statuses: tuple[RunStatus, ...] = ()
    workflow: str | None = Field(default=None, max_length=253)
    text: str | None = Field(default=None, max_length=253)
    ids: tuple[str, ...] | None = None  # e.g. the uids a label selector matched
    after: Cursor | None = None
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)


class RunRow(BaseModel):
    """One line of the runs list: the store's record plus step progress."""

    model_config = _FROZEN
    run: RunRecord
    steps_done: int
    steps_seen: int
    current_step: str | None


class RunPage(BaseModel):
    model_config = _FROZEN
    rows: tuple[RunRow, ...]
    next: Cursor | None  # None on the last page


class RunQueries:
    """The UI's reads, on an open `PostgresStore` (its pool and connection retries)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def page(self, flt: RunFilter) -> RunPage:
        """One page of `flt.namespace`'s runs, newest first."""

        async def op(conn: Conn) -> list[Any]:
            return await conn.fetch(PAGE, *page_args(flt))

        rows = await self._store._call("list runs page", op)
        items = [_row(row) for row in rows[: flt.limit]]
        more = len(rows) > flt.limit
        last = items[-1].run if items and more else None
        return RunPage(
            rows=tuple(items),
            next=Cursor(created_at=last.created_at, id=last.id) if last else None,
        )

    async def offset_page(self, namespace: str, limit: int, offset: int) -> list[RunRow]:
        """The baseline bench/ui.py compares `page` with; the UI never calls it."""

        async def op(conn: Conn) -> list[Any]:
            return await conn.fetch(OFFSET_PAGE, namespace, limit, offset)

        return [_row(row) for row in await self._store._call("offset page", op)]

    async def run(self, namespace: str, run_id: str) -> RunRecord | None:
        """The run if it belongs to `namespace` (a uid from elsewhere reads nothing)."""

        async def op(conn: Conn) -> Any:
            return await conn.fetchrow(_IN_NAMESPACE, run_id, namespace)

        row = await self._store._call("get run", op)
        return None if row is None else _run_record(row)

    async def history(self, namespace: str, run_id: str) -> list[Event]:
        """The run's events, oldest first; empty for a run outside `namespace`."""
        if await self.run(namespace, run_id) is None:
            return []
        return await self._store.load_history(run_id)

    async def children(self, namespace: str, run_id: str, limit: int = 100) -> list[RunRecord]:
        async def op(conn: Conn) -> list[Any]:
            return await conn.fetch(_CHILDREN, run_id, namespace, limit)

        return [_run_record(row) for row in await self._store._call("child runs", op)]

    async def workflows(self, namespace: str) -> list[str]:
        """Workflow names seen in `namespace` (the filter's choices)."""

        async def op(conn: Conn) -> list[Any]:
            return await conn.fetch(WORKFLOWS, namespace)

        return [str(row["workflow"]) for row in await self._store._call("workflows", op)]


def page_args(flt: RunFilter) -> tuple[Any, ...]:
    """PAGE's parameters for `flt` (one more row than the page: is there a next page?)."""
    return (
        flt.namespace,
        [s.value for s in flt.statuses] or None,
        flt.workflow or None,
        flt.text or None,
        None if flt.ids is None else list(flt.ids),
        flt.after.created_at if flt.after else END,
        flt.after.id if flt.after else "",
        flt.limit + 1,
    )


def _row(row: Any) -> RunRow:
    return RunRow(
        run=_run_record(row),
        steps_done=int(row["done"] or 0),
        steps_seen=int(row["seen"] or 0),
        current_step=row["current"],
    )


def statuses(values: Sequence[str]) -> tuple[RunStatus, ...]:
    """Parse phase filter values (either `succeeded` or `Succeeded`); ValueError names it."""
    out = []
    for value in values:
        key = value.strip().lower().replace("timedout", "timed_out")
        try:
            out.append(RunStatus(key))
        except ValueError:
            allowed = ", ".join(s.value for s in RunStatus)
            raise ValueError(f"phase: unknown phase {value!r} (one of {allowed})") from None
    return tuple(out)
