"""Values crossing into history: JSON out, typed values back in.

Results are always decoded from their JSON form, live as well as on replay,
so a workflow sees exactly the same Python values in both cases.
"""

from __future__ import annotations

import functools
from typing import Any

import pydantic
import pydantic_core

from ratline.sdk.errors import InputValidationError, OutputValidationError


def to_json(value: Any) -> Any:
    """A JSON-compatible copy of `value` (Pydantic models, dataclasses, datetimes...)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return pydantic_core.to_jsonable_python(value)


@functools.lru_cache(maxsize=512)
def _adapter(type_: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(type_)


def from_json(value: Any, type_: Any) -> Any:
    """Rebuild a typed value; untyped (`Any`) values stay plain JSON."""
    if type_ is Any or type_ is None or type_ is type(None):
        return value
    try:
        return _adapter(type_).validate_python(value)
    except TypeError:  # unhashable or unsupported annotation: keep the JSON value
        return value


def error_info(exc: BaseException) -> dict[str, Any]:
    """What history keeps of an exception: its type name and message."""
    return {"type": type(exc).__name__, "message": str(exc)[:4000]}


def first_error(exc: pydantic.ValidationError, whole: str) -> tuple[str, str]:
    """The first offending field (dotted path, or `whole` at the top) and its message."""
    first = exc.errors()[0]
    return ".".join(str(part) for part in first["loc"]) or whole, first["msg"]


def validate_input(workflow: str, type_: Any, raw: Any) -> Any:
    """Validate a run's input, naming the first offending field on failure."""
    if type_ is Any:
        return raw
    try:
        return _adapter(type_).validate_python(raw)
    except pydantic.ValidationError as exc:
        field, message = first_error(exc, "input")
        raise InputValidationError(workflow, field, message) from None


_SCALARS = frozenset({str, int, float, bool})


def validate_output(workflow: str, type_: Any, value: Any) -> Any:
    """The JSON form of a workflow's result, checked against its declared output type:
    a run must not succeed with a result no reader can load."""
    if type_ is Any or type_ is None:
        return to_json(value)
    if type(value) is type_ and type_ in _SCALARS:  # already exactly what was declared
        return value
    try:
        adapter = _adapter(type_)
    except TypeError:  # an annotation pydantic cannot check: keep the value as it is
        return to_json(value)
    try:
        checked = adapter.validate_python(value)
        return adapter.dump_python(checked, mode="json")
    except pydantic.ValidationError as exc:
        field, message = first_error(exc, "output")
        raise OutputValidationError(workflow, field, message) from None
    except pydantic_core.PydanticSerializationError as exc:
        raise OutputValidationError(workflow, "output", str(exc)) from None


def refusal(type_: Any, payload: Any) -> dict[str, str] | None:
    """Why `payload` does not fit a typed promise (field and message), or None if it does."""
    if type_ is None or type_ is Any:
        return None
    try:
        _adapter(type_).validate_python(payload)
    except pydantic.ValidationError as exc:
        field, message = first_error(exc, "payload")
        return {"field": field, "message": f"{field}: {message}"}
    return None
