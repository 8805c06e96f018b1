"""Stand-ins for the external services the examples call (payment API, mailer...).

Each example owns a small service class built on `FakeService`. It records every
call in memory so unit tests can count side effects, has knobs to make calls
fail, and, when the environment variable `RATLINE_EXAMPLE_LOG` names a file,
appends one JSON line per call there: the e2e tests run workers as separate
processes and count side effects across them by reading that file.

Records carry a caller-chosen `key` (an order id, a run id...) so tests that
use unique keys never see each other's calls, though the services are shared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_ENV = "RATLINE_EXAMPLE_LOG"


@dataclass(frozen=True)
class Call:
    """One side effect that really happened."""

    service: str
    op: str
    key: str
    data: dict[str, Any] = field(default_factory=dict)


class FakeService:
    """Records calls; `fail(op, key, times)` makes the next calls of `op` for `key` fail."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[Call] = []
        self._failures: dict[tuple[str, str], int] = {}

    def fail(self, op: str, key: str, times: int = 1) -> None:
        """Arm a knob: the next `times` calls of `op` for `key` fail (-1: all of them)."""
        self._failures[(op, key)] = times

    def should_fail(self, op: str, key: str) -> bool:
        """Consume one armed failure of `op` for `key`, if any."""
        left = self._failures.get((op, key), 0)
        if left == 0:
            return False
        if left > 0:
            self._failures[(op, key)] = left - 1
        return True

    def record(self, op: str, key: str, **data: Any) -> Call:
        """Note a side effect here and, if configured, in the shared log file."""
        call = Call(self.name, op, key, dict(data))
        self.calls.append(call)
        path = os.environ.get(LOG_ENV)
        if path:
            line = json.dumps(
                {"service": self.name, "op": op, "key": key, "pid": os.getpid(), **data},
                default=str,
            )
            # one short write in append mode: lines from concurrent workers never interleave
            with open(path, "a", encoding="utf-8") as log:
                log.write(line + "\n")
        return call

    def calls_for(self, key: str, op: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.key == key and (op is None or c.op == op)]

    def count(self, key: str, op: str | None = None) -> int:
        return len(self.calls_for(key, op))


def read_log(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records a `RATLINE_EXAMPLE_LOG` file holds, in the order they were written."""
    file = Path(path)
    if not file.exists():
        return
    with file.open(encoding="utf-8") as log:
        for line in log:
            if line.strip():
                yield json.loads(line)
