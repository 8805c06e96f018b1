"""The small pieces an activation is made of: options, waiters, handles, helpers.

Nothing here imports the rest of the engine, so every other engine module can
import these without a cycle.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ratline.sdk.context import Promise, TaskHandle

current_step: contextvars.ContextVar[str] = contextvars.ContextVar("ratline_step", default="")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Abort(BaseException):
    """Stops the workflow body when the store fenced us off or went away."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.cause = cause


@dataclass
class Waiter:
    """A branch of the workflow blocked until a deadline or a signal."""

    command_id: int
    kind: str  # timer | retry | promise
    name: str
    deadline: datetime | None
    future: asyncio.Future[Any]


@dataclass
class PromiseState:
    command_id: int
    name: str
    deadline: datetime | None
    future: asyncio.Future[Any]
    resolved_seq: int | None = None  # seq of the recorded resolution, when replayed
    type_: Any = None  # `ctx.promise(..., type=)`: payloads are validated against it


@dataclass
class Compensation:
    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass
class ExecutionOptions:
    """Knobs of one activation; the testing runner sets a fake clock and threshold 0."""

    clock: Callable[[], datetime] = utcnow
    idle_threshold_s: float = 2.0
    attempt: int = 1
    crash_after_step: str | None = None  # testing: die right after this step is recorded
    crash_during_step: str | None = None  # testing: die inside this step, before recording
    replay_only: bool = False  # the replayer: stop where history ends, never run new work
    busy_inbox_poll_s: float = 1.0


class ReplayQuietLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds run and step; drops records while the code is only replaying."""

    def __init__(self, run_id: str, run_name: str, replaying: Callable[[], bool]) -> None:
        super().__init__(logging.getLogger("ratline.workflow"), {})
        self._run_id = run_id
        self._run_name = run_name
        self._replaying = replaying

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("run_id", self._run_id)
        extra.setdefault("step", current_step.get())
        kwargs["extra"] = extra
        return f"[{self._run_name}] {msg}", kwargs

    def isEnabledFor(self, level: int) -> bool:
        return not self._replaying() and super().isEnabledFor(level)


Park = Callable[[Callable[[], bool]], AbstractContextManager[None]]


class Handle(TaskHandle[Any]):
    """A fan-out branch; awaiting it parks the awaiting branch on this one."""

    def __init__(self, name: str, command_id: int, task: asyncio.Task[Any], park: Park) -> None:
        self.name = name
        self.command_id = command_id
        self.task = task
        self._park = park

    async def result(self) -> Any:
        with self._park(lambda: not self.task.done()):
            return await asyncio.shield(self.task)


class PromiseHandle(Promise[Any]):
    def __init__(self, state: PromiseState, wait: Callable[[PromiseState], Awaitable[Any]]) -> None:
        self.name = state.name
        self._state = state
        self._wait = wait

    async def wait(self) -> Any:
        return await self._wait(self._state)


def retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a branch's exception as seen: unawaited handles must not warn."""
    if not task.cancelled():
        task.exception()


_ASYNC: dict[object, bool] = {}


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling `fn` gives a coroutine; cached per plain function's code object."""
    key = getattr(fn, "__code__", None)
    found = _ASYNC.get(key) if key is not None else None
    if found is not None:
        return found
    target = getattr(fn, "func", fn)  # functools.partial
    found = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - async callable objects
    )
    if key is not None:
        _ASYNC[key] = found
    return found


_RETURN_TYPES: dict[object, Any] = {}


def return_type(fn: Callable[..., Any]) -> Any:
    """The declared return type, cached per code object: replaying 10,000 steps must
    not evaluate 10,000 string annotations."""
    key = getattr(fn, "__code__", None)
    if key is not None and key in _RETURN_TYPES:
        return _RETURN_TYPES[key]
    try:
        found = inspect.get_annotations(fn, eval_str=True).get("return", Any)
    except Exception:  # lambdas, builtins, unresolvable names: untyped
        found = Any
    if key is not None:
        _RETURN_TYPES[key] = found
    return found


def iso(value: datetime) -> str:
    return value.isoformat()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def child_name(parent: str, name: str, command_id: int) -> str:
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    suffix = f"-{safe}-{command_id}"
    return (parent[: 63 - len(suffix)] + suffix).strip("-")


def joined(branches: list[asyncio.Task[Any]], return_exceptions: bool) -> Callable[[], bool]:
    """Whether a `gather` of `branches` still waits, read from the branches themselves."""

    def waiting() -> bool:
        if all(b.done() for b in branches):
            return False
        if return_exceptions:
            return True
        return not any(b.done() and (b.cancelled() or b.exception()) for b in branches)

    return waiting
