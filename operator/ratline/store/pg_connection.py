"""Postgres connections for the event store: which errors mean "retry on a fresh connection",
connecting with bounded retries, and the shared LISTEN connection behind `wait_for_change`.

Used by `postgres.py` (`PostgresStore`) only; kept apart so the store module holds the SQL and
the `Store` methods, and this one the connection lifecycle. Messages name `host:port`, never
the password.
"""

from __future__ import annotations

import asyncio
import logging
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


async def with_connect_retry(dsn: str, retry_s: float, connect: Callable[[], Awaitable[T]]) -> T:
    """Connect, retrying unreachable or starting servers with backoff for `retry_s`;
    errors name host:port and never the password."""
    where = describe_dsn(dsn)
    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            return await connect()
        except _PERMANENT_CONNECT_ERRORS as exc:
            detail = _redact(str(exc), dsn)
            raise StoreError(
                f"cannot use Postgres at {where}: {type(exc).__name__}: {detail}"
            ) from None
        except _RETRY_CONNECT_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise StoreError(
                    f"cannot reach Postgres at {where} (gave up after {retry_s:g} s): "
                    f"{type(exc).__name__}: {_redact(str(exc), dsn)}"
                ) from None
            log.warning("Postgres at %s not reachable yet (%s); retrying", where, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class Listener:
    """One lazily opened LISTEN connection shared by every `wait_for_change` caller.

    If the connection drops, every waiter is woken (a notification may have been
    lost, so callers re-read) and the next wait reconnects.
    """

    def __init__(self, connect: Callable[[], Awaitable[PlainConn]]) -> None:
        self._connect = connect
        self._conn: PlainConn | None = None
        self._lock = asyncio.Lock()
        self._waiters: dict[str | None, set[asyncio.Event]] = {}

    async def _ensure(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            conn = await self._connect()
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
            except BaseException:
                await conn.close()
                raise
            conn.add_termination_listener(self._on_lost)
            self._conn = conn

    def _on_notify(self, conn: AnyConn, pid: int, channel: str, payload: object) -> None:
        keys = (payload, None) if isinstance(payload, str) else (None,)
        for key in keys:
            for event in self._waiters.get(key, ()):
                event.set()

    def _on_lost(self, conn: AnyConn) -> None:
        if self._conn is conn:
            self._conn = None
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def wait(self, run_id: str | None, timeout_s: float) -> bool:
        event = asyncio.Event()
        self._waiters.setdefault(run_id, set()).add(event)
        try:
            await self._ensure()
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
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close(timeout=5.0)
