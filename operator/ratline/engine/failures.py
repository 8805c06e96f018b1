"""A step's error across the step boundary: recorded by import path, rebuilt by type.

History keeps the type's module and qualified name, its message and (when they
are plain JSON) its arguments. Rebuilding gives an exception that is an
instance of the original type and of `StepFailedError`, so both kinds of
`except` catch it, live and on replay; a type that cannot be imported any more
becomes a `StepFailedError` naming it.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from ratline.engine.codec import error_info, to_json
from ratline.sdk.errors import StepFailedError


def step_error_info(exc: BaseException) -> dict[str, Any]:
    """What history keeps of a step's error."""
    kind: type[BaseException] = type(exc)
    original = getattr(exc, "original", None)
    if isinstance(exc, StepFailedError) and isinstance(original, type):
        kind = original  # a rebuilt error raised again: keep the original's path
    info = {**error_info(exc), "type": kind.__name__}
    info["module"], info["qualname"] = kind.__module__, kind.__qualname__
    with contextlib.suppress(Exception):  # arguments that are not plain data: message only
        info["args"] = to_json(list(exc.args))
    return info


def step_failure(step: str, info: dict[str, Any], attempts: int) -> StepFailedError:
    """The exception a workflow sees for a step that failed for good."""
    name = str(info.get("type"))
    message = str(info.get("message"))
    original = _importable(info.get("module"), info.get("qualname"))
    combined = _combined(original) if original is not None else None
    if combined is None or original is None:
        path = ".".join(str(p) for p in (info.get("module"), info.get("qualname")) if p)
        missing = path if info.get("module") not in (None, "builtins") else name
        return StepFailedError(step, missing or name, message, attempts)
    args = info.get("args")
    error: Any
    try:
        error = combined(*(args if isinstance(args, list) else [message]))
    except Exception:  # a constructor that wants other arguments: keep the message
        error = combined.__new__(combined)
        BaseException.__init__(error, message)
    error.step, error.error_type, error.message, error.attempts = step, name, message, attempts
    error.original = original
    return error  # type: ignore[no-any-return]


def _importable(module: Any, qualname: Any) -> type[BaseException] | None:
    if not isinstance(module, str) or not isinstance(qualname, str) or "<locals>" in qualname:
        return None
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:  # moved, renamed or unimportable: fall back to StepFailedError
        return None
    if isinstance(target, type) and issubclass(target, Exception):
        return target
    return None


class _Rebuilt(StepFailedError):
    """Sits after the original type in a rebuilt class's MRO, so the original's own
    `super().__init__(...)` ends in `Exception` rather than in `StepFailedError`."""

    def __init__(self, *args: Any) -> None:
        Exception.__init__(self, *args)


_COMBINED: dict[type[BaseException], type[StepFailedError] | None] = {}


def _combined(original: type[BaseException]) -> type[StepFailedError] | None:
    """A class that is both `original` and `StepFailedError` (cached per type)."""
    if issubclass(original, StepFailedError):
        return original
    if original not in _COMBINED:
        try:
            made: type[StepFailedError] | None = type(original.__name__, (original, _Rebuilt), {})
        except TypeError:  # incompatible layouts: only StepFailedError can be offered
            made = None
        if made is not None:
            made.__module__ = original.__module__
            made.__qualname__ = original.__qualname__
        _COMBINED[original] = made
    return _COMBINED[original]
