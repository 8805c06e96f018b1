"""In-memory, time-skipping runner for testing workflows (no Kubernetes, no Postgres)."""

from ratline.testing.env import RunFailedError, RunHandle, WorkflowTestEnv

__all__ = ["RunFailedError", "RunHandle", "WorkflowTestEnv"]
