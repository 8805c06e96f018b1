"""The contract between the operator and the worker pods it starts, in one place.

Both sides import these names (the operator builds pods and reads exit codes;
the worker reads its environment and chooses its exit code), so a literal on
one side cannot drift from the other. Nothing here imports the rest of
Ratline: it sits below every other package (see the import-linter contracts).
"""

from __future__ import annotations

import enum

GROUP = "ratline.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
RUNS = "workflowruns"
WORKFLOWS = "workflows"


class ExitCode(enum.IntEnum):
    """How a worker process ends; docs/architecture.md says what the operator does."""

    OK = 0  # the run finished, suspended or was blocked: read the store
    CRASH = 1
    USAGE = 2  # a required setting is missing: WorkerConfigInvalid, not retried
    INPUT_INVALID = 65  # the input does not fit the workflow: InputInvalid, not retried
    ENTRYPOINT_INVALID = 66  # the entrypoint cannot be loaded: EntrypointInvalid
    STORE_UNREACHABLE = 69  # retried with backoff
    LEASE_HELD = 75  # another worker holds the run: retried with backoff


# Environment variables the operator sets on the worker container (reserved:
# a Workflow's podTemplate cannot override them).
ENV_RUN_ID = "RATLINE_RUN_ID"
ENV_ENTRYPOINT = "RATLINE_ENTRYPOINT"
ENV_IDLE_THRESHOLD = "RATLINE_IDLE_THRESHOLD"
ENV_WORKER_ID = "RATLINE_WORKER_ID"
ENV_DSN = "RATLINE_DSN"
ENV_ATTEMPT = "RATLINE_ATTEMPT"
ENV_DEFAULT_RETRY = "RATLINE_DEFAULT_RETRY"  # Workflow.spec.defaults.retry as JSON
RESERVED_ENV = frozenset(
    {
        ENV_RUN_ID,
        ENV_ENTRYPOINT,
        ENV_IDLE_THRESHOLD,
        ENV_WORKER_ID,
        ENV_DSN,
        ENV_ATTEMPT,
        ENV_DEFAULT_RETRY,
    }
)

# Labels and annotations Ratline puts on the objects it creates (docs/crds.md).
MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_RUN = f"{GROUP}/run"
LABEL_RUN_UID = f"{GROUP}/run-uid"
LABEL_WORKFLOW = f"{GROUP}/workflow"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_PARENT_UID = f"{GROUP}/parent-uid"
LABEL_PARENT = f"{GROUP}/parent"
ANNOTATION_PROMISE = f"{GROUP}/parent-promise"
