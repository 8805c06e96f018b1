"""The surface a workflow sees: `WorkflowContext` and the handles it returns.

These are abstract: the engine implements them. Every method that touches
the outside world is a numbered command recorded in history, so the same code
replayed later takes the same path without repeating completed work.
"""

from __future__ import annotations

import abc
import logging
import random as _random
import uuid
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar, overload

from ratline.sdk.retry import RetryPolicy

T = TypeVar("T")


@dataclass(frozen=True)
class WorkflowInfo:
    """Who is running: stable across replays and worker pods."""

    run_id: str
    name: str
    namespace: str
    workflow: str
    attempt: int  # worker activation number, 1 for the first pod
    replaying: bool
    step_key: str  # idempotency key of the step currently executing, "" outside a step
    workflow_attempt: int = 1  # whole-workflow attempt (`max_retries`), 1 for the first

    def idempotency_key(self, command_id: int) -> str:
        return f"{self.run_id}:{command_id}"


@dataclass(frozen=True)
class StepInfo:
    """What a step did in the latest activation: tests count re-executions with it."""

    command_id: int
    name: str
    kind: str
    attempts: int
    replayed: bool
    executed: bool
    ok: bool


class Promise(abc.ABC, Generic[T]):
    """A value that arrives from outside (a signal) or never (a timeout)."""

    name: str

    @abc.abstractmethod
    async def wait(self) -> T:
        """The payload; `TimeoutError` past the deadline, `PromiseRejectedError` if rejected."""

    def __await__(self) -> Generator[Any, None, T]:
        return self.wait().__await__()


class TaskHandle(abc.ABC, Generic[T]):
    """A step started with `schedule_async`; await it or pass it to `gather`."""

    name: str
    command_id: int

    @abc.abstractmethod
    async def result(self) -> T: ...

    def __await__(self) -> Generator[Any, None, T]:
        return self.result().__await__()


class WorkflowContext(abc.ABC):
    """Deterministic, durable primitives. Use these instead of time, random or I/O."""

    @property
    @abc.abstractmethod
    def info(self) -> WorkflowInfo: ...

    @property
    @abc.abstractmethod
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """Adds run and step to records and stays silent while replaying."""

    @overload
    async def run(
        self,
        name: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        retry: RetryPolicy | None = None,
        compensate: Callable[[T], Any] | None = None,
    ) -> T: ...
    @overload
    async def run(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        retry: RetryPolicy | None = None,
        compensate: Callable[[T], Any] | None = None,
    ) -> T: ...
    @abc.abstractmethod
    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        compensate: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Run a side effect once; its result is checkpointed. `compensate(result)` is
        registered as its undo action when it succeeds."""

    @abc.abstractmethod
    async def schedule(self, task: str | Callable[..., Any], *args: Any) -> Any:
        """Run a registered `@task` with its retry policy."""

    @abc.abstractmethod
    def schedule_async(self, task: str | Callable[..., Any], *args: Any) -> TaskHandle[Any]:
        """Start a registered task (or `(name, fn)` via `run_async`) without waiting."""

    @overload
    def run_async(
        self,
        name: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        retry: RetryPolicy | None = None,
    ) -> TaskHandle[T]: ...
    @overload
    def run_async(
        self, name: str, fn: Callable[..., T], *args: Any, retry: RetryPolicy | None = None
    ) -> TaskHandle[T]: ...
    @abc.abstractmethod
    def run_async(
        self, name: str, fn: Callable[..., Any], *args: Any, retry: RetryPolicy | None = None
    ) -> TaskHandle[Any]:
        """Like `run`, without waiting: for fan-out."""

    @overload
    async def gather(
        self, *handles: Awaitable[Any], return_exceptions: Literal[False] = False
    ) -> list[Any]: ...
    @overload
    async def gather(
        self, *handles: Awaitable[Any], return_exceptions: Literal[True]
    ) -> list[Any | BaseException]: ...
    @abc.abstractmethod
    async def gather(self, *handles: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
        """Wait for every handle; each item is checkpointed on its own."""

    @abc.abstractmethod
    async def sleep(self, duration: timedelta | str | float) -> None:
        """A durable timer: long sleeps end the worker and cost no running pod."""

    @overload
    def promise(
        self, name: str, timeout: timedelta | str | float | None = None, *, type: type[T]
    ) -> Promise[T]: ...
    @overload
    def promise(
        self, name: str, timeout: timedelta | str | float | None = None, *, type: None = None
    ) -> Promise[Any]: ...
    @abc.abstractmethod
    def promise(
        self, name: str, timeout: timedelta | str | float | None = None, *, type: Any = None
    ) -> Promise[Any]:
        """A named slot filled by a signal (`kubectl patch ... spec.signals.<name>`).

        With `type=` (a pydantic model or any type pydantic validates), `wait()`
        returns that type; a payload that does not validate is refused (recorded
        as a SignalRefused event naming the field) and the promise keeps waiting
        for a corrected signal."""

    @abc.abstractmethod
    async def set(self, key: str, value: Any) -> None:
        """Durable state, shown in the run's status."""

    @abc.abstractmethod
    def get(self, key: str, default: Any = None) -> Any: ...

    @abc.abstractmethod
    def now(self) -> datetime:
        """Wall-clock time recorded on first execution and replayed afterwards."""

    @abc.abstractmethod
    def random(self) -> _random.Random:
        """A random generator seeded by the run: same numbers on replay."""

    @abc.abstractmethod
    def uuid4(self) -> uuid.UUID: ...

    @abc.abstractmethod
    def patched(self, patch_id: str) -> bool:
        """True for runs that reach this point with the new code; False when replaying
        a history recorded by the old code. Guards code changes that add steps."""

    @abc.abstractmethod
    async def child(
        self, workflow: str | Callable[..., Any], inp: Any = None, *, name: str | None = None
    ) -> Any:
        """Start a child run (a WorkflowRun of its own) and wait for its result."""

    @abc.abstractmethod
    def add_compensation(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        """Register an undo action; on failure or cancel they run in reverse order."""
