"""Event store: the runs, events and inbox of every workflow run.

`open_store(dsn)` picks the implementation: a `postgresql://` DSN gives the
asyncpg store, `memory://` the in-process one used by unit tests.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ratline.store.base import (
    DEFAULT_STORE_RETRY_S,
    STORE_RETRY_ENV,
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
)

__all__ = [
    "DEFAULT_STORE_RETRY_S",
    "STORE_RETRY_ENV",
    "Begun",
    "Event",
    "EventType",
    "InboxItem",
    "InboxKind",
    "Lease",
    "NewEvent",
    "NewRun",
    "RunRecord",
    "RunStatus",
    "RunUpdate",
    "Store",
    "open_store",
]


async def open_store(dsn: str, *, retry_s: float = DEFAULT_STORE_RETRY_S) -> Store:
    """A connected store for `dsn`: `postgresql://`/`postgres://` or `memory://`.

    `retry_s`: how long each call of a Postgres store rides out a lost connection.
    The Postgres store is imported lazily so `memory://` users never load asyncpg.
    """
    scheme = urlsplit(dsn).scheme.lower() if "://" in dsn else ""
    if scheme in ("postgresql", "postgres"):
        from ratline.store.postgres import PostgresStore

        return await PostgresStore.connect(dsn, retry_s=retry_s)
    if scheme == "memory":
        from ratline.store.memory import MemoryStore

        return MemoryStore()
    raise ValueError(
        f"unsupported store DSN scheme {scheme!r}: use postgresql://... or memory://"
        if scheme
        else "store DSN has no scheme: use postgresql://user@host:port/db or memory://"
    )
