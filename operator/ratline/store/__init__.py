"""Event store: the runs, events and inbox of every workflow run.

`open_store(dsn)` picks the implementation: a `postgresql://` DSN gives the
asyncpg store, `memory://` the in-process one used by unit tests.
"""
