"""A throw-away Postgres for one benchmark, and the md + json result files it writes.

Used by the single-database benchmarks (`bench.ui`, `bench.retention`); the engine
benchmark in `bench.__main__` runs two databases on one server and keeps its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.cluster.pg import private_server


@contextmanager
def private_database(prefix: str, database: str) -> Iterator[str]:
    """Start a durable private Postgres, yield a DSN of a fresh database, remove it all."""
    with private_server(prefix) as server:
        yield server.create_database(database)


def write_results(
    out: Path, result: dict[str, Any], render: Callable[[dict[str, Any]], str]
) -> None:
    """`out` (markdown) and its `.json` twin, and the markdown on stdout."""
    text = render(result)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
