"""Exceptions a workflow author raises or catches.

They say how the engine should react: `NonRetryableError` stops a step's
retries, `WorkflowCancelled` derives from `BaseException` so that a broad
`except Exception` in user code cannot swallow a cancel.
"""

from __future__ import annotations

from ratline.errors import PermanentError, RatlineError


class NonRetryableError(RatlineError):
    """Raised by a step to fail at once, whatever its retry policy says."""


class StepFailedError(RatlineError):
    """A step failed for good (retries exhausted or non-retryable).

    Carries the original error's type name and message, which is all history
    keeps, so the workflow sees the same exception live and on replay.
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


class NonDeterminismError(PermanentError):
    """The code issued a different command than the one history recorded."""

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


class InputValidationError(PermanentError):
    """The run's input does not fit the workflow's input model; names the field."""

    def __init__(self, workflow: str, field: str, message: str) -> None:
        super().__init__(workflow, field, message)
        self.workflow = workflow
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"input of workflow {self.workflow!r} is invalid at {self.field}: {self.message}"
