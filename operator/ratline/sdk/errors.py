"""Exceptions a workflow author raises or catches.

They say how the engine should react: `NonRetryableError` stops a step's
retries. `WorkflowCancelled` and `NonDeterminismError` derive from
`BaseException`, so a broad `except Exception` in user code cannot swallow a
cancel or a mismatch with history (Temporal fails the workflow task instead of
raising into user code; here the error passes through user handlers, and the
engine refuses every later command, so even `except BaseException` cannot run
one).
"""

from __future__ import annotations

from ratline.errors import PermanentError, RatlineError


class NonRetryableError(RatlineError):
    """Raised by a step to fail at once, whatever its retry policy says."""


class StepFailedError(RatlineError):
    """A step failed for good (retries exhausted or non-retryable).

    History keeps the original error's import path, message and arguments. When
    that type can be imported, the workflow gets an exception that is both an
    instance of it and a `StepFailedError` (so `except RateLimitError:` and
    `except StepFailedError:` both catch it), live and on replay alike;
    otherwise a plain `StepFailedError` whose `error_type` names the type.
    """

    def __init__(self, step: str, error_type: str, message: str, attempts: int) -> None:
        super().__init__(step, error_type, message, attempts)
        self.step = step
        self.error_type = error_type
        self.message = message
        self.attempts = attempts

    def __str__(self) -> str:
        return (
            f"step {self.step!r} failed after {self.attempts} attempt(s): "
            f"{self.error_type}: {self.message}"
        )


class PromiseRejectedError(RatlineError):
    """A promise was rejected from outside (or a child run failed)."""

    def __init__(self, promise: str, error: object) -> None:
        super().__init__(promise, error)
        self.promise = promise
        self.error = error

    def __str__(self) -> str:
        return f"promise {self.promise!r} was rejected: {self.error}"


class NonDeterminismError(BaseException):
    """The code issued a different command than the one history recorded.

    Not an `Exception`: user code cannot catch it by accident, and once raised
    the run issues no further command; it ends Blocked with the diff.
    """

    def __init__(self, command_id: int, expected: str, recorded: str) -> None:
        super().__init__(command_id, expected, recorded)
        self.command_id = command_id
        self.expected = expected
        self.recorded = recorded

    def __str__(self) -> str:
        return (
            f"non-deterministic workflow at command {self.command_id}: the code now issues "
            f"{self.expected}, history recorded {self.recorded}"
        )


class WorkflowCancelled(BaseException):
    """Delivered at the workflow's next await after a cancel (or maxDuration) request."""

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason)
        self.reason = reason


class FieldValidationError(PermanentError):
    """A value at the workflow's boundary does not fit its declared type; names the field."""

    #: which boundary: "input" or "output"
    boundary = "value"

    def __init__(self, workflow: str, field: str, message: str) -> None:
        super().__init__(workflow, field, message)
        self.workflow = workflow
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return (
            f"{self.boundary} of workflow {self.workflow!r} is invalid at {self.field}: "
            f"{self.message}"
        )


class OutputValidationError(FieldValidationError):
    """The workflow returned a value that does not fit its declared output type."""

    boundary = "output"


class InputValidationError(FieldValidationError):
    """The run's input does not fit the workflow's input model."""

    boundary = "input"
