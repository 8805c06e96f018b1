"""The Postgres event store (asyncpg): what workers, the operator and the CLI use.

Every call is one statement on a pooled connection, so one call is one network
round trip; `append` runs the `ratline_commit` SQL function (0002_fast_paths.sql)
that fences on the lease epoch, writes the events, applies the run update, consumes
inbox items, may release the lease and NOTIFYs in one commit; appends of many runs
waiting at once share one statement (`pg_append.py`). `begin` starts an activation
in one call, and history crosses the wire as one json value, decoded in one go.
Connection failures (Postgres stopped or restarting, a dropped socket) are retried
with backoff by one loop (`pg_connection.retry`) within one budget, `retry_s`
(default `DEFAULT_STORE_RETRY_S`, 10 minutes); `append` carries a token so a retry
after a lost reply never writes twice. Which errors are retried, that loop and the
self-healing LISTEN connection live in `pg_connection.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import asyncpg
import pydantic_core

from ratline.errors import FencedError, LeaseHeldError, RunNotFoundError, StoreError
from ratline.store import migrate as migrations
from ratline.store.base import (
    DEFAULT_STORE_RETRY_S,
    Begun,
    Event,
    EventType,
    InboxItem,
    InboxKind,
    Lease,
    NewEvent,
    NewRun,
    RunRecord,
    RunStatus,
    RunUpdate,
    Store,
    trusted,
)
from ratline.store.pg_append import GroupCommit, update_args
from ratline.store.pg_connection import (
    CONNECTION_ERRORS,
    ConnectionGone,
    Listener,
    PlainConn,
    PooledConn,
    describe_dsn,
    retry,
    usable,
    with_connect_retry,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn: TypeAlias = migrations.Conn
_RUN_FIELDS = tuple(RunRecord.model_fields)

_INSERT_RUN = """
INSERT INTO runs (id, namespace, name, workflow, entrypoint, image, input,
                  max_duration_s, parent_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO NOTHING
RETURNING *
"""
_GET_RUN = "SELECT * FROM runs WHERE id = $1"
_LIST_RUNS = "SELECT * FROM runs ORDER BY created_at, id LIMIT $1"
_LIST_RUNS_BY_STATUS = (
    "SELECT * FROM runs WHERE status = ANY ($1::text[]) ORDER BY created_at, id LIMIT $2"
)
_DUE_RUNS = (
    "SELECT * FROM runs WHERE status = 'suspended' AND wake_at <= $1 ORDER BY wake_at, id LIMIT $2"
)
_SET_STATUS = """
WITH u AS (
    UPDATE runs SET
        status      = COALESCE($2, status),
        started_at  = CASE WHEN $2 = 'running' THEN COALESCE(started_at, now())
                           ELSE started_at END,
        finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled', 'timed_out')
                           THEN COALESCE(finished_at, now()) ELSE finished_at END,
        result      = CASE WHEN $3 THEN $4 ELSE result END,
        error       = CASE WHEN $5 THEN $6 ELSE error END,
        wake_at     = CASE WHEN $7::timestamptz IS NOT NULL THEN $7
                           WHEN $8 THEN NULL ELSE wake_at END,
        waiting_for = COALESCE($9, waiting_for),
        updated_at  = now()
    WHERE id = $1
    RETURNING *
)
SELECT u.*, pg_notify('ratline_events', u.id)::text AS notified FROM u
"""
_ACQUIRE = """
UPDATE runs SET lease_owner = $2, lease_epoch = lease_epoch + 1,
       lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2
                   OR lease_expires_at IS NULL OR lease_expires_at <= now())
RETURNING lease_epoch, lease_expires_at
"""
_LEASE_STATE = "SELECT lease_owner, lease_epoch, lease_expires_at FROM runs WHERE id = $1"
_RENEW = """
UPDATE runs SET lease_expires_at = now() + make_interval(secs => $4)
WHERE id = $1 AND lease_epoch = $2 AND lease_owner = $3
RETURNING lease_expires_at
"""
_RELEASE = """
UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1 AND lease_epoch = $2 AND lease_owner = $3
"""
_REVOKE = """
UPDATE runs SET lease_epoch = lease_epoch + 1, lease_owner = NULL, lease_expires_at = NULL,
       updated_at = now()
WHERE id = $1
RETURNING lease_epoch
"""
# One json value instead of rows: a single json.loads beats per-row, per-column codecs.
_LOAD_HISTORY = """
SELECT coalesce(json_agg(json_build_array(seq, type, command_id, name, payload, time)
                         ORDER BY seq), '[]')::text
FROM events WHERE run_id = $1 AND seq > $2
"""
_BEGIN = "SELECT ratline_begin($1, $2, $3)"
# A suspended run is woken only by what it waits for (ratline_wakes, 0003); an early
# signal is listed instead. Run after a suspending commit, the UPDATE waits for its row
# lock and then sees the new status and waiting_for.
_DELIVER = """
WITH ins AS (
    INSERT INTO inbox (run_id, name, kind, payload) VALUES ($1, $2, $3, $4)
    ON CONFLICT (run_id, name) DO NOTHING
    RETURNING run_id, name, kind
), woke AS (
    UPDATE runs SET
        wake_at = CASE WHEN runs.status <> 'suspended'
                            OR ratline_wakes(ins.kind, ins.name, runs.waiting_for)
                       THEN now() ELSE runs.wake_at END,
        early_signals = CASE WHEN runs.status = 'suspended'
                                  AND NOT ratline_wakes(ins.kind, ins.name, runs.waiting_for)
                             THEN array_append(runs.early_signals, ins.name)
                             ELSE runs.early_signals END,
        updated_at = now()
    FROM ins
    WHERE runs.id = ins.run_id
      AND runs.status NOT IN ('succeeded', 'failed', 'cancelled', 'timed_out')
)
SELECT pg_notify('ratline_events', ins.run_id)::text AS notified FROM ins
"""
_PENDING_INBOX = """
SELECT run_id, name, kind, payload, created_at, consumed FROM inbox
WHERE run_id = $1 AND NOT consumed ORDER BY delivery
"""
_INBOX_ITEM = """
SELECT run_id, name, kind, payload, created_at, consumed FROM inbox
WHERE run_id = $1 AND name = $2
"""


def _dumps(value: Any) -> str:
    """Strict JSON (no NaN): what Postgres' jsonb accepts is what the store accepts."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value is not JSON-serialisable: {exc}") from exc


def _utc(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC, like asyncpg does for timestamptz."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _run_record(row: asyncpg.Record | dict[str, Any]) -> RunRecord:
    return RunRecord.model_validate({key: row[key] for key in _RUN_FIELDS})


_EVENT_TYPES = {t.value: t for t in EventType}


def _loads(text: str) -> Any:
    """pydantic-core's JSON parser: the same values as json.loads in half the time, and
    repeated strings (event types, step names, keys) are shared, not re-allocated."""
    return pydantic_core.from_json(text, cache_strings=True)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC while decoding a history: the tens of thousands of fresh,
    acyclic containers would otherwise trigger collections that cost as much as the
    decoding itself. Synchronous code only, so no other coroutine runs meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _events(run_id: str, rows: list[list[Any]]) -> list[Event]:
    """Events from `[seq, type, command_id, name, payload, time]` arrays the store wrote
    itself: no validation (about 1 µs an event), times parsed once per append."""
    times: dict[str, datetime] = {}
    events = []
    for seq, type_, command_id, name, payload, at in rows:
        time_ = times.get(at)
        if time_ is None:
            time_ = times[at] = datetime.fromisoformat(at)
        fields = {
            "type": _EVENT_TYPES.get(type_) or EventType(type_),
            "command_id": command_id,
            "name": name,
            "payload": payload,
            "run_id": run_id,
            "seq": seq,
            "time": time_,
        }
        events.append(trusted(Event, fields))
    return events


async def _init_connection(conn: Conn) -> None:
    """Pool init: json/jsonb values cross the wire as Python objects."""
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(
            type_name, encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
        )


async def _no_reset(conn: Conn) -> None:
    """Pool reset: the store never leaves session state behind, so skip the round trip."""


class PostgresStore(Store):
    """`Store` on Postgres; create with `await PostgresStore.connect(dsn)`."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        dsn: str,
        *,
        retry_s: float,
        connect_timeout_s: float,
        migrations_dir: Path,
        max_senders: int = 1,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._where = describe_dsn(dsn)
        self._retry_s = retry_s
        self._connect_timeout_s = connect_timeout_s
        self._migrations_dir = migrations_dir
        self._listener = Listener(self._connect_listener, self._where)
        self._spare: PooledConn | None = None
        self._closed = False
        self._token_prefix = uuid.uuid4().hex[:16]
        self._tokens = itertools.count()
        self._group = GroupCommit(self._call, _dumps, max_senders)

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_retry_s: float = 10.0,
        retry_s: float = DEFAULT_STORE_RETRY_S,
        connect_timeout_s: float = 5.0,
        migrations_dir: Path = migrations.MIGRATIONS_DIR,
    ) -> PostgresStore:
        """Open a pool, retrying unreachable servers for `connect_retry_s` seconds.

        `retry_s` is the outage budget of every later call: a lost connection is
        retried (and the call repeated; appends carry a token, so never twice) until
        Postgres is back or `retry_s` seconds passed since the call first failed.
        Starting up is bounded separately and shorter: nothing is pending yet, and
        the operator restarts a worker that exits 69 with backoff.
        """
        pool = await with_connect_retry(
            dsn,
            connect_retry_s,
            lambda: asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout_s,
                init=_init_connection,
                reset=_no_reset,
            ),
        )
        return cls(
            pool,
            dsn,
            retry_s=retry_s,
            connect_timeout_s=connect_timeout_s,
            migrations_dir=migrations_dir,
            max_senders=max(1, max_size // 2),  # leave connections for begin and reads
        )

    async def _call(self, what: str, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` on a connection; a lost connection is retried by `retry` within the
        store's one budget (`retry_s`), every other error is raised at once."""
        try:
            return await retry(
                f"{what}: lost the connection to Postgres at {self._where}",
                self._retry_s,
                lambda: self._on_connection(op),
                stop=lambda: self._closed,
            )
        except StoreError:
            raise
        except asyncpg.ForeignKeyViolationError as exc:
            raise RunNotFoundError(f"{what}: no such run") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    async def _on_connection(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` on the spare connection, or on one from the pool when it is busy.

        Keeping one healthy pooled connection aside (instead of releasing it) saves
        the pool's acquire/release hops, about 100 µs per call: the worker's
        sequential appends never touch the pool. Concurrent callers use the pool.
        """
        conn = self._spare
        self._spare = None
        if conn is None or not usable(conn):
            conn = await self._pool.acquire()
        healthy = False
        try:
            result = await op(conn)
            healthy = True
            return result
        except StoreError:
            healthy = True
            raise
        except asyncpg.PostgresError as exc:  # the server answered: the connection is fine
            healthy = not isinstance(exc, CONNECTION_ERRORS)
            raise
        except asyncpg.InterfaceError as exc:
            if not usable(conn):  # it closed under us and the pool took it back
                raise ConnectionGone(str(exc)) from exc
            raise
        except asyncpg.exceptions.InternalClientError as exc:
            # Out of step with the server, e.g. a FATAL (admin shutdown) arrived while
            # the connection sat idle: drop it so the pool opens a fresh one.
            if usable(conn):
                conn.terminate()
            raise ConnectionGone(str(exc)) from exc
        finally:
            if (
                healthy
                and self._spare is None
                and not self._closed
                and usable(conn)
                and not conn.is_in_transaction()
            ):
                self._spare = conn
            else:
                await self._pool.release(conn)  # a no-op if the pool already took it back

    # -- lifecycle --------------------------------------------------------------------------

    async def migrate(self) -> None:
        async def run(conn: Conn) -> None:
            await migrations.migrate(conn, self._migrations_dir)

        await self._call("migrate", run)

    async def close(self) -> None:
        await self._group.close()
        self._closed = True
        spare, self._spare = self._spare, None
        if spare is not None:
            await self._pool.release(spare)
        await self._listener.close()
        try:
            await asyncio.wait_for(self._pool.close(), timeout=5.0)
        except TimeoutError:
            self._pool.terminate()

    # -- runs -------------------------------------------------------------------------------

    async def create_run(self, run: NewRun) -> RunRecord:
        fields = ("id", "namespace", "name", "workflow", "entrypoint", "image", "input")
        args = [getattr(run, f) for f in (*fields, "max_duration_s", "parent_id")]

        async def op(conn: Conn) -> RunRecord:
            row = await conn.fetchrow(_INSERT_RUN, *args)
            if row is None:  # already there: a fresh statement sees the winner's row
                row = await conn.fetchrow(_GET_RUN, run.id)
            if row is None:
                raise StoreError(f"create_run {run.id}: the run was deleted while being created")
            return _run_record(row)

        return await self._call(f"create_run {run.id}", op)

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._call(f"get_run {run_id}", lambda c: c.fetchrow(_GET_RUN, run_id))
        return _run_record(row) if row is not None else None

    async def list_runs(
        self, *, statuses: Sequence[RunStatus] | None = None, limit: int = 1000
    ) -> list[RunRecord]:
        if statuses is None:
            rows = await self._call("list_runs", lambda c: c.fetch(_LIST_RUNS, limit))
        else:
            names = [RunStatus(s).value for s in statuses]
            rows = await self._call(
                "list_runs", lambda c: c.fetch(_LIST_RUNS_BY_STATUS, names, limit)
            )
        return [_run_record(row) for row in rows]

    async def due_runs(self, now: datetime, limit: int = 100) -> list[RunRecord]:
        rows = await self._call("due_runs", lambda c: c.fetch(_DUE_RUNS, _utc(now), limit))
        return [_run_record(row) for row in rows]

    async def set_status(self, run_id: str, update: RunUpdate) -> RunRecord:
        args = update_args(update)
        row = await self._call(
            f"set_status {run_id}", lambda c: c.fetchrow(_SET_STATUS, run_id, *args)
        )
        if row is None:
            raise RunNotFoundError(f"set_status: no run {run_id}")
        return _run_record(row)

    # -- leases -----------------------------------------------------------------------------

    async def begin(self, run_id: str, owner: str, ttl_s: float = 30.0) -> Begun:
        text = await self._call(
            f"begin {run_id}", lambda c: c.fetchval(_BEGIN, run_id, owner, float(ttl_s))
        )
        if text is None:
            raise RunNotFoundError(f"begin: no run {run_id}")
        with _no_gc():
            data = _loads(text)
            history = _events(run_id, data.get("history", []))
        run = _run_record(data["run"])
        if not data["leased"]:
            if run.status.finished or run.status is RunStatus.BLOCKED:
                return Begun(run, None, [], [])
            raise LeaseHeldError(
                f"run {run_id} is leased by {run.lease_owner!r} until {run.lease_expires_at}"
            )
        assert run.lease_expires_at is not None  # just set by ratline_begin
        lease = Lease(
            run_id=run_id, owner=owner, epoch=run.lease_epoch, expires_at=run.lease_expires_at
        )
        inbox = [
            InboxItem(
                run_id=run_id,
                name=name,
                kind=InboxKind(kind),
                payload=payload,
                created_at=datetime.fromisoformat(created),
            )
            for name, kind, payload, created in data["inbox"]
        ]
        return Begun(run, lease, history, inbox)

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float = 30.0) -> Lease:
        async def op(conn: Conn) -> Lease:
            holder, until = None, None
            for _ in range(3):  # the holder may release between our two statements
                row = await conn.fetchrow(_ACQUIRE, run_id, owner, float(ttl_s))
                if row is not None:
                    return Lease(
                        run_id=run_id,
                        owner=owner,
                        epoch=row["lease_epoch"],
                        expires_at=row["lease_expires_at"],
                    )
                state = await conn.fetchrow(_LEASE_STATE, run_id)
                if state is None:
                    raise RunNotFoundError(f"acquire_lease: no run {run_id}")
                holder, until = state["lease_owner"], state["lease_expires_at"]
                if holder is not None and until is not None:
                    break
            raise LeaseHeldError(f"run {run_id} is leased by {holder!r} until {until}")

        return await self._call(f"acquire_lease {run_id}", op)

    async def renew_lease(self, lease: Lease, ttl_s: float = 30.0) -> Lease:
        async def op(conn: Conn) -> Lease:
            row = await conn.fetchrow(_RENEW, lease.run_id, lease.epoch, lease.owner, float(ttl_s))
            if row is not None:
                return lease.model_copy(update={"expires_at": row["lease_expires_at"]})
            await self._raise_fenced(conn, lease)
            raise AssertionError("unreachable")

        return await self._call(f"renew_lease {lease.run_id}", op)

    async def _raise_fenced(self, conn: Conn, lease: Lease) -> None:
        state = await conn.fetchrow(_LEASE_STATE, lease.run_id)
        if state is None:
            raise RunNotFoundError(f"no run {lease.run_id}")
        raise FencedError(
            f"run {lease.run_id}: lease epoch {lease.epoch} of {lease.owner!r} is no longer "
            f"current (epoch {state['lease_epoch']}, owner {state['lease_owner']!r})"
        )

    async def release_lease(self, lease: Lease) -> None:
        await self._call(
            f"release_lease {lease.run_id}",
            lambda c: c.execute(_RELEASE, lease.run_id, lease.epoch, lease.owner),
        )

    async def revoke_lease(self, run_id: str) -> int:
        epoch = await self._call(f"revoke_lease {run_id}", lambda c: c.fetchval(_REVOKE, run_id))
        if epoch is None:
            raise RunNotFoundError(f"revoke_lease: no run {run_id}")
        return int(epoch)

    # -- history ----------------------------------------------------------------------------

    async def load_history(self, run_id: str, after_seq: int = 0) -> list[Event]:
        text = await self._call(
            f"load_history {run_id}", lambda c: c.fetchval(_LOAD_HISTORY, run_id, after_seq)
        )
        with _no_gc():
            return _events(run_id, _loads(text))

    async def append(
        self,
        lease: Lease,
        events: Sequence[NewEvent],
        update: RunUpdate | None = None,
        consumed_inbox: Sequence[str] = (),
    ) -> list[Event]:
        encoded = _dumps(
            [
                {
                    "type": e.type.value,
                    "command_id": e.command_id,
                    "name": e.name,
                    "payload": e.payload,
                }
                for e in events
            ]
        )
        payloads = [item["payload"] for item in json.loads(encoded)]  # copies, as stored
        args = (
            lease.run_id,
            lease.epoch,
            # One token per call, reused by its retries: a retry never writes twice.
            f"{self._token_prefix}{next(self._tokens)}",
            encoded,
            *update_args(update),
            list(consumed_inbox),
            update is not None and update.release_lease,
        )
        outcome, base, at, cur_epoch = await self._group.send(args)
        if outcome == "not_found":
            raise RunNotFoundError(f"append: no run {lease.run_id}")
        if outcome == "fenced":
            raise FencedError(
                f"run {lease.run_id}: lease epoch {lease.epoch} of {lease.owner!r} is fenced "
                f"(current epoch {cur_epoch}); nothing was written"
            )
        if outcome == "duplicate":
            log.info("append %s: an earlier try committed; not writing again", lease.run_id)
            history = await self.load_history(lease.run_id, base)
            return history[: len(events)]
        return [
            trusted(
                Event,
                {
                    "type": e.type,
                    "command_id": e.command_id,
                    "name": e.name,
                    "payload": payload,
                    "run_id": lease.run_id,
                    "seq": base + i,
                    "time": at,
                },
            )
            for i, (e, payload) in enumerate(zip(events, payloads, strict=True), start=1)
        ]

    # -- inbox ------------------------------------------------------------------------------

    async def deliver(self, run_id: str, name: str, kind: InboxKind, payload: Any = None) -> bool:
        kind_value = InboxKind(kind).value
        rows = await self._call(
            f"deliver {run_id}/{name}",
            lambda c: c.fetch(_DELIVER, run_id, name, kind_value, payload),
        )
        return bool(rows)

    async def pending_inbox(self, run_id: str) -> list[InboxItem]:
        rows = await self._call(
            f"pending_inbox {run_id}", lambda c: c.fetch(_PENDING_INBOX, run_id)
        )
        return [InboxItem.model_validate(dict(row)) for row in rows]

    async def inbox_item(self, run_id: str, name: str) -> InboxItem | None:
        rows = await self._call(
            f"inbox_item {run_id}/{name}", lambda c: c.fetch(_INBOX_ITEM, run_id, name)
        )
        return InboxItem.model_validate(dict(rows[0])) if rows else None

    # -- notifications ----------------------------------------------------------------------

    async def wait_for_change(self, run_id: str | None, timeout_s: float) -> bool:
        """Changes before the first call are not reported: the LISTEN starts lazily."""
        if self._closed:
            raise StoreError("wait_for_change: the store is closed")
        return await self._listener.wait(run_id, timeout_s)

    async def _connect_listener(self) -> PlainConn:
        """One attempt: the listener retries (and logs) on its own, for as long as needed."""
        return await asyncpg.connect(self._dsn, timeout=self._connect_timeout_s)
