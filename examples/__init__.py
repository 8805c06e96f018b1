"""Runnable example workflows; each has its Workflow/WorkflowRun YAML beside it."""
