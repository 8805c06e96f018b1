"""In-memory, time-skipping runner for testing workflows (no Kubernetes, no Postgres),
and the replayer that checks recorded histories against today's code."""

from ratline.testing.env import RunFailedError, RunHandle, WorkflowTestEnv
from ratline.testing.replay import load_history, replay

__all__ = ["RunFailedError", "RunHandle", "WorkflowTestEnv", "load_history", "replay"]
