"""Benchmarks (not tests): Ratline against DBOS Transact on one private Postgres."""
