"""Postgres connections for the event store: which errors mean "retry on a fresh connection",
the store's one retry loop (`retry`, used for every call and every connect), and the
shared LISTEN connection behind `wait_for_change`, which reconnects by itself.

Used by `postgres.py` (`PostgresStore`) only; kept apart so the store module holds the SQL and
the `Store` methods, and this one the connection lifecycle. Messages name `host:port`, never
the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg

from ratline.errors import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")
PooledConn: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
PlainConn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
AnyConn: TypeAlias = "asyncpg.connection.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]"
CHANNEL = "ratline_events"  # what the SQL pg_notify()s on
#: Backoff of `retry`: the first delay, doubled up to the last.
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 5.0
#: How long the first `wait_for_change` may wait for the LISTEN to be in place.
FIRST_LISTEN_S = 10.0


class ConnectionGone(ConnectionError):
    """A pooled connection closed while in use (asyncpg detached it from the pool)."""


def usable(conn: PooledConn) -> bool:
    """Still open and still ours: a closed connection is taken back by the pool."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


#: Errors after which the same call may succeed on a fresh connection.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionGone
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, starting up, crash
    asyncpg.TooManyConnectionsError,
)
#: Connect errors that no amount of retrying fixes.
_PERMANENT_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidPasswordError,
    asyncpg.exceptions.ClientConfigurationError,
)
#: While connecting, any other server error (e.g. still starting up) may pass.
_RETRY_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresError,
)


def describe_dsn(dsn: str) -> str:
    """`host:port` (or the socket dir) of a DSN, for messages: never the password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
        port = parts.port or 5432
    except ValueError:
        return "<unparsable DSN>"
    return f"{host}:{port}"


def _redact(text: str, dsn: str) -> str:
    try:
        password = urlsplit(dsn).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


async def retry(
    what: str,
    budget_s: float,
    op: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...] = CONNECTION_ERRORS,
    stop: Callable[[], bool] = lambda: False,
    redact: Callable[[str], str] = lambda text: text,
) -> T:
    """The store's one retry loop: every Postgres call and every connect goes through it.

    `op` is tried again after each `retry_on` error, with doubling delays (50 ms up to
    5 s) and a warning per retry, until `budget_s` seconds have passed since the first
    failure (or `stop()` says the store is closing); then a `StoreError` starting with
    `what`. Nothing else in the store (and nothing above it) retries a lost connection,
    so an outage costs exactly one budget, never a product of nested ones.
    """
    deadline: float | None = None
    delay = RETRY_FIRST_DELAY_S
    tries = 0
    while True:
        try:
            return await op()
        except retry_on as exc:
            tries += 1
            now = time.monotonic()
            deadline = deadline if deadline is not None else now + budget_s
            detail = redact(f"{type(exc).__name__}: {exc}")
            if stop() or now + delay > deadline:
                raise StoreError(f"{what} (gave up after {budget_s:g} s): {detail}") from exc
            log.warning(
                "%s (try %d, next in %.2f s, giving up in %.0f s): %s",
                what,
                tries,
                delay,
                deadline - now,
                detail,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_S)


async def with_connect_retry(dsn: str, retry_s: float, connect: Callable[[], Awaitable[T]]) -> T:
    """Connect through `retry`: unreachable or starting servers are retried for `retry_s`;
    wrong credentials or a missing database fail at once. Errors name host:port and
    never the password."""
    where = describe_dsn(dsn)

    async def attempt() -> T:
        try:
            return await connect()
        except _PERMANENT_CONNECT_ERRORS as exc:
            detail = _redact(str(exc), dsn)
            raise StoreError(
                f"cannot use Postgres at {where}: {type(exc).__name__}: {detail}"
            ) from None

    return await retry(
        f"cannot reach Postgres at {where}",
        retry_s,
        attempt,
        retry_on=_RETRY_CONNECT_ERRORS,
        redact=lambda text: _redact(text, dsn),
    )


class Listener:
    """The one LISTEN connection shared by every `wait_for_change` caller, kept open.

    A background task connects, LISTENs and watches the connection (a termination
    callback, plus a `SELECT 1` after every quiet `HEALTH_CHECK_S`). When it drops
    (the backend terminated, Postgres restarting, a dead socket) the task reconnects
    with the store's backoff, forever while the store is open, and then wakes every
    waiter: a notification may have been lost meanwhile, so callers re-read. A wait
    never raises for a lost connection; while reconnecting it simply times out.
    """

    HEALTH_CHECK_S = 30.0

    def __init__(self, connect: Callable[[], Awaitable[PlainConn]], where: str) -> None:
        """`connect`: one attempt at a plain connection (retries are this class's job)."""
        self._connect = connect
        self._where = where
        self._conn: PlainConn | None = None
        self._waiters: dict[str | None, set[asyncio.Event]] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._first = asyncio.Event()  # set once the first LISTEN is in place
        self._closed = False
        self.reconnects = 0  # for tests and logs

    def _start(self) -> None:
        if self._keeper is None and not self._closed:
            self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        """Connect, LISTEN, wait for the loss, reconnect: until `close`. Reconnecting is
        the store's one `retry` loop with no budget: nothing pending depends on it."""
        while not self._closed:
            try:
                conn = await retry(
                    f"LISTEN connection to Postgres at {self._where}",
                    math.inf,
                    self._listen,
                    retry_on=(Exception,),  # whatever stops a connect or a LISTEN
                    stop=lambda: self._closed,
                )
            except StoreError:  # closing
                return
            if self._first.is_set():
                self.reconnects += 1
                log.info("LISTEN connection to Postgres at %s re-established", self._where)
                self._wake_all()  # what happened while we were away was not heard
            self._first.set()
            await self._watch(conn)

    async def _listen(self) -> PlainConn:
        conn = await self._connect()
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_lost)
        except BaseException:
            conn.terminate()
            raise
        self._lost.clear()
        self._conn = conn
        return conn

    async def _watch(self, conn: PlainConn) -> None:
        """Return once `conn` is gone (closed under us or failing a health check)."""
        while not self._closed and not conn.is_closed():
            try:
                await asyncio.wait_for(self._lost.wait(), self.HEALTH_CHECK_S)
            except TimeoutError:
                try:
                    await conn.execute("SELECT 1", timeout=self.HEALTH_CHECK_S)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("LISTEN connection health check failed: %s", exc)
                    conn.terminate()
                continue
            break
        if self._conn is conn:
            self._conn = None
        if not self._closed:
            log.warning("LISTEN connection to Postgres at %s lost; reconnecting", self._where)
            self._wake_all()

    def _on_notify(self, conn: AnyConn, pid: int, channel: str, payload: object) -> None:
        keys = (payload, None) if isinstance(payload, str) else (None,)
        for key in keys:
            for event in self._waiters.get(key, ()):
                event.set()

    def _on_lost(self, conn: AnyConn) -> None:
        if self._conn is conn:
            self._lost.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def wait(self, run_id: str | None, timeout_s: float) -> bool:
        """True when woken (a change, or the connection came back), False on timeout.

        The first call also waits until the first LISTEN is in place (up to
        `FIRST_LISTEN_S` at least), so what a caller does right after it returns is heard."""
        event = asyncio.Event()
        self._waiters.setdefault(run_id, set()).add(event)
        try:
            self._start()
            if not self._first.is_set():
                await asyncio.wait_for(self._first.wait(), max(timeout_s, FIRST_LISTEN_S))
            await asyncio.wait_for(event.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[run_id]

    async def close(self) -> None:
        self._closed = True
        self._wake_all()
        self._first.set()  # nobody may wait for a connection that will never come
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5.0)
            except Exception:  # the server is gone: drop the socket
                conn.terminate()
