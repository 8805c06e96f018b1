"""Ratline: durable Python workflows on Kubernetes.

Authors import everything from here; see `ratline.sdk` for the details.
"""

from ratline.sdk import (
    InputValidationError,
    NonDeterminismError,
    NonRetryableError,
    Promise,
    PromiseRejectedError,
    RetryPolicy,
    StepFailedError,
    StepInfo,
    TaskHandle,
    WorkflowCancelled,
    WorkflowContext,
    WorkflowDefinition,
    WorkflowInfo,
    task,
    workflow,
)

__all__ = [
    "InputValidationError",
    "NonDeterminismError",
    "NonRetryableError",
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
    "task",
    "workflow",
]
