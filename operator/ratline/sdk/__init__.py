"""What workflow authors import (re-exported from `ratline`)."""

from ratline.sdk.context import Promise, StepInfo, TaskHandle, WorkflowContext, WorkflowInfo
from ratline.sdk.definition import WorkflowDefinition, WorkflowSpec, spec_of, task, workflow
from ratline.sdk.durations import parse_duration
from ratline.sdk.errors import (
    InputValidationError,
    NonDeterminismError,
    NonRetryableError,
    OutputValidationError,
    PromiseRejectedError,
    StepFailedError,
    WorkflowCancelled,
)
from ratline.sdk.retry import RetryPolicy

__all__ = [
    "InputValidationError",
    "NonDeterminismError",
    "NonRetryableError",
    "OutputValidationError",
    "Promise",
    "PromiseRejectedError",
    "RetryPolicy",
    "StepFailedError",
    "StepInfo",
    "TaskHandle",
    "WorkflowCancelled",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowInfo",
    "WorkflowSpec",
    "parse_duration",
    "spec_of",
    "task",
    "workflow",
]
