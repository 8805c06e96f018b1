"""Appends for the Postgres store: their SQL arguments and the group commit.

`PostgresStore.append` encodes an append here (`commit_args`) and hands it to
`GroupCommit`. A lone append is sent at once by its caller as one
`ratline_commit` call, exactly as before. When many runs in one process append at
the same time (a worker pool, the benchmark's 500 runs), the appends that queue up
while every sender is busy leave together as one `ratline_commit_many` statement:
one round trip and one commit (one fsync) for all of them. Each run keeps its own
fencing check and its own outcome, and each caller still returns only after its
commit, so a step's completion is durable before that run's next side effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

import asyncpg

from ratline.errors import StoreError
from ratline.store.base import RunUpdate
from ratline.store.migrate import Conn
from ratline.store.pg_connection import CONNECTION_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")
#: (outcome, base_seq, at, cur_epoch), as `ratline_commit` returns them.
Outcome: TypeAlias = tuple[str, int, datetime, int]
#: The 14 positional arguments of `ratline_commit`.
CommitArgs: TypeAlias = tuple[Any, ...]
#: `PostgresStore._call`: run an operation on a connection, retrying lost connections.
Caller: TypeAlias = Callable[[str, Callable[[Conn], Awaitable[Any]]], Awaitable[Any]]

_COMMIT_ONE = (
    "SELECT outcome, base_seq, at, cur_epoch FROM ratline_commit("
    "$1, $2, $3, $4::text::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)
_COMMIT_MANY = (
    "SELECT idx, outcome, base_seq, at, cur_epoch FROM ratline_commit_many($1::text::jsonb)"
)
#: At most this many appends per statement (bounds one transaction's locks and size).
MAX_BATCH = 256


def update_args(update: RunUpdate | None) -> tuple[Any, ...]:
    """The RunUpdate as ratline_commit's (status, set_result, result, set_error, error,
    wake_at, clear_wake_at, waiting_for); `result`/`error` apply when given explicitly."""
    if update is None:
        return (None, False, None, False, None, None, False, None)
    fields = update.model_fields_set
    wake_at = update.wake_at
    if wake_at is not None and wake_at.tzinfo is None:
        wake_at = wake_at.replace(tzinfo=UTC)  # naive is UTC, like asyncpg's timestamptz
    return (
        update.status.value if update.status is not None else None,
        "result" in fields,
        update.result,
        "error" in fields,
        update.error,
        wake_at,
        update.clear_wake_at,
        update.waiting_for,
    )


def _item_json(args: CommitArgs, dumps: Callable[[Any], str]) -> str:
    """One element of ratline_commit_many's array; the events are already JSON text."""
    (run_id, epoch, token, events, status, set_result, result, set_error, error, wake_at) = args[
        :10
    ]
    clear_wake_at, waiting_for, consumed, release = args[10:]
    head = dumps(
        {
            "run_id": run_id,
            "epoch": epoch,
            "token": token,
            "status": status,
            "set_result": set_result,
            "result": result,
            "set_error": set_error,
            "error": error,
            "wake_at": wake_at.isoformat() if wake_at is not None else None,
            "clear_wake_at": clear_wake_at,
            "waiting_for": waiting_for,
            "consumed": consumed,
            "release": release,
        }
    )
    return f'{head[:-1]},"events":{events}}}'


class GroupCommit:
    """Sends appends: inline when a sender is free, else batched by drain tasks.

    At most `max_senders` statements are in flight at once; what arrives while they
    all are busy waits in the queue and leaves as one batch when a sender frees up,
    so batches grow exactly as fast as the server falls behind.
    """

    def __init__(self, call: Caller, dumps: Callable[[Any], str], max_senders: int) -> None:
        self._call = call
        self._dumps = dumps
        self._max_senders = max(1, max_senders)
        self._senders = 0
        self._queue: list[tuple[CommitArgs, asyncio.Future[Outcome]]] = []
        self._drainers: set[asyncio.Task[None]] = set()
        self.batches = 0  # statements that carried more than one append (for tests)

    async def send(self, args: CommitArgs) -> Outcome:
        if not self._queue and self._senders < self._max_senders:
            self._senders += 1  # the common sequential case: no task, no queue
            try:
                return await self._one(args)
            finally:
                self._senders -= 1
                self._start_drainer()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((args, future))
        self._start_drainer()
        return await future

    async def close(self) -> None:
        """Let queued appends finish (they fail fast once the pool is closed)."""
        if self._drainers:
            await asyncio.gather(*self._drainers, return_exceptions=True)

    def _start_drainer(self) -> None:
        if self._queue and self._senders < self._max_senders:
            self._senders += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)

    async def _drain(self) -> None:
        batch: list[tuple[CommitArgs, asyncio.Future[Outcome]]] = []
        try:
            while self._queue:
                batch = [(a, f) for a, f in self._queue[:MAX_BATCH] if not f.done()]
                del self._queue[:MAX_BATCH]
                if len(batch) == 1:
                    await self._settle(*batch[0])
                elif batch:
                    await self._send_batch(batch)
        except BaseException:  # cancelled (the loop is closing): no caller may hang
            for _, future in batch:
                future.cancel()
            raise
        finally:
            self._senders -= 1

    async def _one(self, args: CommitArgs) -> Outcome:
        async def op(conn: Conn) -> Outcome:
            row = await conn.fetchrow(_COMMIT_ONE, *args)
            assert row is not None  # the function always returns one row
            return (row[0], row[1], row[2], row[3])

        result: Outcome = await self._call(f"append {args[0]}", op)
        return result

    async def _send_batch(self, batch: list[tuple[CommitArgs, asyncio.Future[Outcome]]]) -> None:
        batch.sort(key=lambda entry: entry[0][0])  # lock rows in run-id order: no deadlocks
        text = "[" + ",".join(_item_json(a, self._dumps) for a, _ in batch) + "]"

        async def op(conn: Conn) -> list[Outcome]:
            rows = await conn.fetch(_COMMIT_MANY, text)
            by_index = {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}
            return [by_index[i] for i in range(1, len(batch) + 1)]

        try:
            outcomes: list[Outcome] = await self._call(f"append batch of {len(batch)}", op)
        except StoreError as exc:
            cause = exc.__cause__
            if not isinstance(cause, asyncpg.PostgresError) or isinstance(cause, CONNECTION_ERRORS):
                self._fail(batch, exc)  # the server is gone: every append fails alike
                return
            # One append broke the statement (or a deadlock): send them one by one so
            # each caller gets its own outcome or error.
            log.info("group commit of %d appends failed (%s); one by one now", len(batch), exc)
            for entry in batch:
                await self._settle(*entry)
            return
        self.batches += 1
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _settle(self, args: CommitArgs, future: asyncio.Future[Outcome]) -> None:
        """Send one queued append on its own and hand its caller the outcome or error."""
        try:
            outcome = await self._one(args)
        except Exception as exc:
            self._fail([(args, future)], exc)
            return
        if not future.done():
            future.set_result(outcome)

    @staticmethod
    def _fail(batch: list[tuple[CommitArgs, asyncio.Future[Outcome]]], exc: Exception) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
