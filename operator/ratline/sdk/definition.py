"""Workflow and task definitions, and the registry the worker resolves names in.

Decorators only validate and register a frozen definition: no I/O happens at
import time, so importing a workflow module is always safe.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from ratline.sdk.durations import parse_duration
from ratline.sdk.retry import RetryPolicy

if TYPE_CHECKING:
    from ratline.sdk.context import WorkflowContext

In = TypeVar("In")
Out = TypeVar("Out")

WorkflowFn = Callable[["WorkflowContext", Any], Awaitable[Any]]


@dataclass(frozen=True)
class WorkflowSpec:
    """What the engine needs to run a workflow: its code and its boundary types."""

    name: str
    fn: WorkflowFn
    input_type: Any
    output_type: Any
    max_duration: timedelta | None  # None: no limit
    retry: RetryPolicy | None  # default policy of steps that set none (`step_retry=`)
    max_retries: int = 0  # whole-workflow attempts after the first one fails


DEFAULT_MAX_DURATION = "7d"


@dataclass(frozen=True)
class TaskSpec:
    """A named, registered step function with its default retry policy."""

    name: str
    fn: Callable[..., Any]
    retry: RetryPolicy | None
    output_type: Any


_WORKFLOWS: dict[str, WorkflowSpec] = {}
_TASKS: dict[str, TaskSpec] = {}


def registered_workflow(name: str) -> WorkflowSpec | None:
    return _WORKFLOWS.get(name)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward refs: treat as untyped
        return {}


def _param_type(fn: Callable[..., Any], index: int) -> Any:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) <= index:
        return Any
    return _hints(fn).get(params[index].name, Any)


def _max_duration(value: str | timedelta | float | None) -> timedelta | None:
    return None if value is None else parse_duration(value)


def _max_retries(value: int) -> int:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"max_retries must be an int >= 0, got {value!r}")
    return value


class WorkflowDefinition(Generic[In, Out]):
    """Class style: subclass, set `name`, implement `execute`.

    `In` and `Out` are read from the generic base, so `WorkflowDefinition[OrderInput,
    OrderResult]` validates input and output like the decorator style does.
    """

    name: str = ""
    max_duration: str | timedelta | None = DEFAULT_MAX_DURATION  # None: no limit
    step_retry: RetryPolicy | None = None  # default policy of steps that set none
    max_retries: int = 0  # whole-workflow retries

    async def execute(self, ctx: WorkflowContext, inp: In) -> Out:
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls) or cls.execute is WorkflowDefinition.execute:
            return
        in_type: Any = Any
        out_type: Any = Any
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is WorkflowDefinition:
                in_type, out_type = typing.get_args(base)
        name = cls.name or cls.__name__
        if "retry" in cls.__dict__:
            raise TypeError(f"{cls.__name__}.retry was renamed: use step_retry (per step)")

        async def run(ctx: WorkflowContext, inp: Any) -> Any:
            return await cls().execute(ctx, inp)

        spec = WorkflowSpec(
            name=name,
            fn=run,
            input_type=in_type,
            output_type=out_type,
            max_duration=_max_duration(cls.max_duration),
            retry=cls.step_retry,
            max_retries=_max_retries(cls.max_retries),
        )
        cls.__ratline_workflow__ = spec  # type: ignore[attr-defined]
        _WORKFLOWS[name] = spec


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@overload
def workflow(fn: F, /) -> F: ...
@overload
def workflow(
    *,
    name: str | None = None,
    max_duration: str | timedelta | None = DEFAULT_MAX_DURATION,
    step_retry: RetryPolicy | None = None,
    max_retries: int = 0,
) -> Callable[[F], F]: ...
def workflow(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    max_duration: str | timedelta | None = DEFAULT_MAX_DURATION,
    step_retry: RetryPolicy | None = None,
    max_retries: int = 0,
) -> F | Callable[[F], F]:
    """Register an async function `(ctx, input) -> output` as a workflow.

    `step_retry` is the default policy of steps that set none (a step's own
    `retry=` wins). `max_retries` reruns the whole workflow from the start when
    it fails (after its compensations), as new attempts of the same run.
    `max_duration` (default 7 days, None for no limit) cancels the run, with
    compensation, once passed; a run's or Workflow's maxDuration wins over it.
    """

    def register(f: F) -> F:
        candidate: Any = f  # keep `f` typed as F: iscoroutinefunction narrows
        if not inspect.iscoroutinefunction(candidate):
            raise TypeError(f"@workflow needs an async function, got {f!r}")
        spec = WorkflowSpec(
            name=name or f.__name__,
            fn=f,
            input_type=_param_type(f, 1),
            output_type=_hints(f).get("return", Any),
            max_duration=_max_duration(max_duration),
            retry=step_retry,
            max_retries=_max_retries(max_retries),
        )
        f.__ratline_workflow__ = spec  # type: ignore[attr-defined]
        _WORKFLOWS[spec.name] = spec
        return f

    if fn is not None:
        return register(fn)
    return register


T = TypeVar("T", bound=Callable[..., Any])


@overload
def task(fn: T, /) -> T: ...
@overload
def task(*, name: str | None = None, retry: RetryPolicy | None = None) -> Callable[[T], T]: ...
def task(
    fn: T | None = None, /, *, name: str | None = None, retry: RetryPolicy | None = None
) -> T | Callable[[T], T]:
    """Register a step function under a name for `ctx.schedule(name, input)`."""

    def register(f: T) -> T:
        spec = TaskSpec(
            name=name or f.__name__, fn=f, retry=retry, output_type=_hints(f).get("return", Any)
        )
        f.__ratline_task__ = spec  # type: ignore[attr-defined]
        _TASKS[spec.name] = spec
        return f

    if fn is not None:
        return register(fn)
    return register


def spec_of(obj: object) -> WorkflowSpec:
    """The WorkflowSpec behind a decorated function, a definition class or a name."""
    if isinstance(obj, str):
        found = _WORKFLOWS.get(obj)
        if found is None:
            raise LookupError(f"no workflow registered under the name {obj!r}")
        return found
    spec = getattr(obj, "__ratline_workflow__", None)
    if not isinstance(spec, WorkflowSpec):
        raise TypeError(f"{obj!r} is not a workflow (decorate it with @workflow)")
    return spec


def task_of(obj: object) -> TaskSpec:
    if isinstance(obj, str):
        found = _TASKS.get(obj)
        if found is None:
            raise LookupError(f"no task registered under the name {obj!r}")
        return found
    spec = getattr(obj, "__ratline_task__", None)
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"{obj!r} is not a task (decorate it with @task)")
    return spec
